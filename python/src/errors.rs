//! Raising the Python exception classes of `ikvpy.errors` from Rust errors.

use ikv_core::{Error, ErrorKind};
use ikv_writer::client::ClientError;
use pyo3::prelude::*;
use pyo3::types::PyModule;

/// Raises `ikvpy.errors.<class_name>(message)`.
pub fn raise(class_name: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let class = PyModule::import(py, "ikvpy.errors").and_then(|m| m.getattr(class_name));
        match class {
            Ok(class) => match class.call1((message.clone(),)) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            },
            Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
        }
    })
}

/// The Python class for an ikv error kind.
pub fn class_for(e: &Error) -> &'static str {
    match e.kind() {
        ErrorKind::InvalidInput => "IKVValueError",
        ErrorKind::StoreNotFound => "StoreNotFoundError",
        ErrorKind::StoreExists => "StoreExistsError",
        ErrorKind::TypeMismatch => "IKVTypeError",
        ErrorKind::NotMounted => "NotMountedError",
        ErrorKind::Storage => "StorageError",
        ErrorKind::NoAccess => "StorageAccessError",
        ErrorKind::Corrupt => "CorruptDataError",
        ErrorKind::MountInUse => "MountInUseError",
        _ => "IKVRuntimeError",
    }
}

pub fn to_py(e: Error) -> PyErr {
    raise(class_for(&e), e.to_string())
}

pub fn client_to_py(e: ClientError) -> PyErr {
    match &e {
        ClientError::Api { status, .. } => {
            let class = match status {
                400 | 413 => "IKVValueError",
                401 | 403 => "AuthenticationError",
                404 => "StoreNotFoundError",
                _ => "StorageError",
            };
            raise(class, e.to_string())
        }
        ClientError::Transport(_) => raise("StorageError", e.to_string()),
    }
}
