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
}

impl Fail {
    pub fn new(code: u8, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Fail {
        Fail::new(BAD_ARGUMENTS, message)
    }
}

impl From<ikv_core::Error> for Fail {
    fn from(e: ikv_core::Error) -> Fail {
        let denied = matches!(
            &e,
            ikv_core::Error::Storage {
                source: object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. },
                ..
            }
        );
        let code = match e.kind() {
            _ if denied => NO_ACCESS,
            ErrorKind::InvalidInput | ErrorKind::TypeMismatch | ErrorKind::NotMounted => {
                BAD_ARGUMENTS
            }
            ErrorKind::StoreNotFound => NOT_FOUND,
            ErrorKind::StoreExists => EXISTS,
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
