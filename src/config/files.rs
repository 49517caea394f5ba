//! What validation asks of the file system, behind one small trait the caller passes: a static
//! root can be listed, a hosts file and certificates can be read, a private key's mode. [`load`]
//! and [`parse`] pass [`Disk`], the real one; a test can pass a file system of its own.
//!
//! [`load`]: super::load
//! [`parse`]: super::parse

use std::io;
use std::path::Path;

/// The file system as validation sees it.
pub trait FileSystem {
    /// A file's bytes.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Whether a directory can be listed (`Ok`), or why not.
    fn list_dir(&self, path: &Path) -> io::Result<()>;
    /// A file's permission bits (`0o600`).
    fn mode(&self, path: &Path) -> io::Result<u32>;
}

/// The machine's own file system.
pub struct Disk;

impl FileSystem for Disk {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::read_dir(path).map(drop)
    }

    fn mode(&self, path: &Path) -> io::Result<u32> {
        use std::os::unix::fs::PermissionsExt;
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
    }
}
