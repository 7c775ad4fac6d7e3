//! Errors of the CLI and their exit codes (documented in `docs/CLI.md`).

use ikv_core::ErrorKind;

/// Exit codes.
pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const BAD_ARGUMENTS: u8 = 2;
pub const NOT_FOUND: u8 = 3;
pub const NO_ACCESS: u8 = 4;
pub const EXISTS: u8 = 5;

/// A failure: the message for stderr and the exit code.
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub message: String,
    /// What the command printed before it failed (stdout), e.g. a status table with a hole.
    pub output: String,
}

impl Fail {
    pub fn new(code: u8, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
            output: String::new(),
        }
    }

    /// The failure, with what the command printed on stdout first.
    pub fn with_output(mut self, output: String) -> Fail {
        self.output = output;
        self
    }

    pub fn usage(message: impl Into<String>) -> Fail {
        Fail::new(BAD_ARGUMENTS, message)
    }
}

impl From<ikv_core::Error> for Fail {
    fn from(e: ikv_core::Error) -> Fail {
        // `NoAccess` covers S3's 401/403 and a local directory's permission errors anywhere in
        // the error's chain (core's `ErrorKind`), as HTTP and Python map it too.
        let code = match e.kind() {
            ErrorKind::InvalidInput | ErrorKind::TypeMismatch | ErrorKind::NotMounted => {
                BAD_ARGUMENTS
            }
            ErrorKind::StoreNotFound => NOT_FOUND,
            ErrorKind::StoreExists => EXISTS,
            ErrorKind::NoAccess => NO_ACCESS,
            _ => FAILED,
        };
        Fail::new(code, e.to_string())
    }
}

impl From<String> for Fail {
    fn from(message: String) -> Fail {
        Fail::new(FAILED, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_anywhere_in_the_chain_mean_no_access() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = ikv_core::Error::Storage {
            context: "reading".into(),
            source: object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(io),
            },
        };
        assert_eq!(Fail::from(e).code, NO_ACCESS);
        let e = ikv_core::Error::Storage {
            context: "reading".into(),
            source: object_store::Error::PermissionDenied {
                path: "p".into(),
                source: "403".into(),
            },
        };
        assert_eq!(Fail::from(e).code, NO_ACCESS);
        assert_eq!(
            Fail::from(ikv_core::Error::StoreNotFound("s".into())).code,
            NOT_FOUND
        );
    }
}
