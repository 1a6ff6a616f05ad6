//! `zhitong test`'s side of matrix files: reading one (the format and its parser are
//! [`vmm::matrix`]) and where each case's console log goes.

use std::path::{Path, PathBuf};

use vmm::config::file;
use vmm::matrix::parse;
pub use vmm::matrix::MatrixCase;

/// Read a matrix file; the error is one line naming the file, the line and the problem.
pub fn load(path: &Path) -> Result<Vec<MatrixCase>, String> {
    let text = file::read_text(path).map_err(|e| {
        format!(
            "cannot read the matrix {}: {e}; check the path given to zhitong test",
            path.display()
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir).map_err(|e| format!("matrix {}: {e}", path.display()))
}

/// The file a case's console goes to.
pub fn log_path(dir: &Path, case: &MatrixCase) -> PathBuf {
    dir.join(format!("{}.log", case.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_logs_to_its_name() {
        let text = "[[case]]\nname = \"exit-3\"\nkernel = { path = \"/k\" }\n";
        let cases = parse(text, Path::new("/m")).unwrap();
        assert_eq!(
            log_path(Path::new("/logs"), &cases[0]),
            Path::new("/logs/exit-3.log")
        );
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = load(Path::new("/nonexistent/m.toml")).unwrap_err();
        assert!(err.contains("/nonexistent/m.toml"), "{err}");
        assert_eq!(
            load(Path::new("/dev/zero")).unwrap_err(),
            "cannot read the matrix /dev/zero: a character device, not a regular file; check the path given to zhitong test"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
