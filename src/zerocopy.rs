//! Zero-copy bodies: large cached files live in sealed memory files (memfd) mapped read-only,
//! so a response body is an ordinary `Bytes` for every layer above the socket (TLS, HTTP/2,
//! compression, ranges), while a plain-TCP connection recognises such a body when hyper hands
//! it over for writing and sends it with `sendfile(2)`, the kernel taking the pages straight
//! from the memory file instead of copying them from user space (nginx's `sendfile on`).
//!
//! The seals (no write, grow, shrink) make the pages immutable, so a body in flight in the
//! kernel never changes under the client even after the cache has dropped the file.
//!
//! A cached file also keeps its original file open: while that file is unchanged, `sendfile`
//! reads the filesystem's page cache instead, whose large folios cost the kernel less per byte
//! than a memory file's small pages (about a quarter less per 200 KB send here). "Unchanged"
//! is checked with one `fstat` per send: the same size, modification time and change time
//! (`ctime`, which every write moves and no user can set back). A timestamp has a grain (a
//! clock tick), so a write in the same tick as the cached read could leave both times as
//! they were: the original is only used at all when its last change was at least
//! [`RACY_MARGIN`] before the cached read began, so that any later write shows as a new
//! `ctime`. A file changed since it was cached, or cut short under the send, goes out from the
//! sealed copy. What is left (README, Static files): bytes already handed to the kernel read
//! the file's pages until they are transmitted, so a file rewritten in place during that
//! moment can still reach that one response; a file replaced by rename never can.
//!
//! Each memory file holds a file descriptor: at most a quarter of the process's descriptor
//! limit are kept open (further large files stay on the heap), so cached files never take the
//! descriptors that connections need.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Files at least this large are kept in a memory file (smaller ones cost more in syscalls and
/// file descriptors than the copy they would save).
pub const MAP_MIN: usize = 64 * 1024;
/// Slices at least this large are looked up as part of a memory file (a range of a large file
/// may be shorter than `MAP_MIN`).
const SEND_MIN: usize = 16 * 1024;

/// A registered mapping: its length, its memory file, and the original file.
type Mapping = (usize, RawFd, Option<Origin>);

/// Live mappings by start address.
static MAPPINGS: RwLock<BTreeMap<usize, Mapping>> = RwLock::new(BTreeMap::new());

/// Bytes of those sent from the original files.
static SENT_FROM_ORIGIN: AtomicU64 = AtomicU64::new(0);

/// How long before a cached read began the original file's last change must be for the
/// original to be used: more than any filesystem's timestamp grain.
pub const RACY_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The file a sealed body was read from, as it was then.
#[derive(Clone, Copy)]
struct Origin {
    fd: RawFd,
    len: u64,
    times: Times,
}

/// Modification and change times, seconds and nanoseconds.
type Times = [(i64, u64); 2];

// the field types differ between targets
#[allow(clippy::unnecessary_cast)]
fn times_of(st: &rustix::fs::Stat) -> Times {
    [
        (st.st_mtime as i64, st.st_mtime_nsec as u64),
        (st.st_ctime as i64, st.st_ctime_nsec as u64),
    ]
}

impl Origin {
    /// `file` as the origin of `len` bytes read from it starting at `read_started`, unless it
    /// changed too close to that read for a later change to show.
    fn of(file: &std::fs::File, len: usize, read_started: std::time::SystemTime) -> Option<(OwnedFd, Origin)> {
        let st = rustix::fs::fstat(file).ok()?;
        if st.st_size as u64 != len as u64 {
            return None;
        }
        let times = times_of(&st);
        let (secs, nanos) = times[1];
        let changed =
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(secs.try_into().ok()?, nanos as u32))?;
        if changed + RACY_MARGIN > read_started {
            return None;
        }
        let fd = OwnedFd::from(file.try_clone().ok()?);
        let origin = Origin {
            fd: fd.as_raw_fd(),
            len: len as u64,
            times,
        };
        Some((fd, origin))
    }

    /// The file still has the size, modification and change times it had when it was read.
    fn unchanged(&self) -> bool {
        // SAFETY: the descriptor is owned by the `Sealed` whose mapping the caller's slice
        // keeps alive for the length of the call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        rustix::fs::fstat(fd).is_ok_and(|st| st.st_size as u64 == self.len && times_of(&st) == self.times)
    }
}

/// Bytes sent with `sendfile` since start (the `sendfile_bytes_total` metric).
static SENT: AtomicU64 = AtomicU64::new(0);

/// Memory files open now.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many memory files may be open at once: a quarter of the descriptor limit.
fn max_live() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        (limit.unwrap_or(1 << 20) / 4).clamp(16, 1 << 20) as usize
    })
}

/// Raises the soft limit on open files to the hard limit (what nginx's `worker_rlimit_nofile`
/// is set by hand for): connections and memory files both need descriptors, and the usual soft
/// default of 1024 is small for a gateway. Returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // an unlimited hard limit still stops at the kernel's nr_open (1048576 by default)
    let target = limit.maximum.unwrap_or(1 << 20);
    if let Some(current) = limit.current
        && current < target
    {
        let raised = Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
    getrlimit(Resource::Nofile).current
}

/// A sealed, read-only mapped memory file holding one body.
struct Sealed {
    ptr: *const u8,
    len: usize,
    /// Open for as long as the mapping is registered: `sendfile` reads from it.
    _fd: OwnedFd,
    /// The original file, also open while the mapping is registered.
    _origin: Option<OwnedFd>,
}

// SAFETY: the mapping is read-only and never changes (sealed) until it is unmapped in `drop`.
unsafe impl Send for Sealed {}
unsafe impl Sync for Sealed {}

impl AsRef<[u8]> for Sealed {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is a live read-only mapping owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        MAPPINGS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(self.ptr as usize));
        LIVE.fetch_sub(1 + usize::from(self._origin.is_some()), Relaxed);
        // SAFETY: the mapping is ours and no `Bytes` points into it any more (we are its owner).
        let _ = unsafe { rustix::mm::munmap(self.ptr as *mut _, self.len) };
    }
}

/// `data` as a `Bytes` backed by a sealed memory file, or an error (no memfd support, out of
/// file descriptors): the caller then keeps an ordinary heap copy.
pub fn seal(name: &str, data: &[u8]) -> io::Result<Bytes> {
    seal_within(name, data, None, max_live())
}

/// [`seal`] for the whole content of `origin`, read from it starting at `read_started`, which
/// plain-TCP sends read from while it is unchanged.
pub fn seal_file(
    name: &str,
    data: &[u8],
    origin: &std::fs::File,
    read_started: std::time::SystemTime,
) -> io::Result<Bytes> {
    seal_within(name, data, Some((origin, read_started)), max_live())
}

fn seal_within(
    name: &str,
    data: &[u8],
    origin: Option<(&std::fs::File, std::time::SystemTime)>,
    max_live: usize,
) -> io::Result<Bytes> {
    if data.is_empty() {
        return Ok(Bytes::new());
    }
    if LIVE.load(Relaxed) >= max_live {
        return Err(io::Error::other(format!(
            "{max_live} memory files open already (a quarter of the descriptor limit)"
        )));
    }
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, data)?;
    let fd = OwnedFd::from(file);
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    // SAFETY: a fresh read-only shared mapping of a file we own, sealed against any change.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            data.len(),
            ProtFlags::READ,
            MapFlags::SHARED,
            &fd,
            0,
        )?
    } as *const u8;
    // the original file takes a descriptor of the budget too, when there is one to spare
    let origin = origin
        .filter(|_| LIVE.load(Relaxed) + 1 < max_live)
        .and_then(|(f, read_started)| Origin::of(f, data.len(), read_started));
    MAPPINGS.write().unwrap_or_else(|e| e.into_inner()).insert(
        ptr as usize,
        (data.len(), fd.as_raw_fd(), origin.as_ref().map(|(_, o)| *o)),
    );
    LIVE.fetch_add(1 + usize::from(origin.is_some()), Relaxed);
    Ok(Bytes::from_owner(Sealed {
        ptr,
        len: data.len(),
        _fd: fd,
        _origin: origin.map(|(fd, _)| fd),
    }))
}

/// The memory file, offset and original file holding `slice`, if it lies wholly inside one.
fn find(slice: &[u8]) -> Option<(RawFd, u64, Option<Origin>)> {
    let start = slice.as_ptr() as usize;
    let map = MAPPINGS.read().unwrap_or_else(|e| e.into_inner());
    let (&base, &(len, fd, origin)) = map.range(..=start).next_back()?;
    (start + slice.len() <= base + len).then_some((fd, (start - base) as u64, origin))
}

/// Writes `bufs` to `tcp` like `writev`, except that a slice of a sealed body goes out with
/// `sendfile` (the slices before it with `MSG_MORE`, so head and body share packets). `None`
/// when no slice qualifies: the caller writes as usual.
pub fn poll_write_vectored(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Option<Poll<io::Result<usize>>> {
    let (at, (fd, offset, origin)) = bufs
        .iter()
        .enumerate()
        .filter(|(_, b)| b.len() >= SEND_MIN)
        .find_map(|(i, b)| find(b).map(|f| (i, f)))?;
    let head = &bufs[..at];
    let head_len: usize = head.iter().map(|b| b.len()).sum();
    let body_len = bufs[at].len();
    let mut written = 0;
    if head_len > 0 {
        match poll_io(tcp, cx, || {
            rustix::net::sendmsg(
                tcp,
                head,
                &mut SendAncillaryBuffer::default(),
                SendFlags::MORE | SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        }) {
            Poll::Ready(Ok(n)) if n == head_len => written = n,
            other => return Some(other),
        }
    }
    // SAFETY: `fd` (and the origin's) belong to the mapping `bufs[at]` points into, which the
    // caller's `Bytes` keeps alive for the length of this call.
    let sealed = unsafe { BorrowedFd::borrow_raw(fd) };
    let origin = origin
        .filter(Origin::unchanged)
        .map(|o| unsafe { BorrowedFd::borrow_raw(o.fd) });
    let mut from_origin = origin.is_some();
    match poll_io(tcp, cx, || {
        if let Some(file) = origin.filter(|_| from_origin) {
            let mut off = offset;
            match rustix::fs::sendfile(tcp, file, Some(&mut off), body_len) {
                // cut short since the check: the sealed copy has the bytes
                Ok(0) => from_origin = false,
                r => return r.map_err(io::Error::from),
            }
        }
        let mut off = offset;
        rustix::fs::sendfile(tcp, sealed, Some(&mut off), body_len).map_err(io::Error::from)
    }) {
        Poll::Ready(Ok(n)) => {
            SENT.fetch_add(n as u64, Relaxed);
            if from_origin {
                SENT_FROM_ORIGIN.fetch_add(n as u64, Relaxed);
            }
            Some(Poll::Ready(Ok(written + n)))
        }
        // the head went out: report it, the body follows on the next call
        Poll::Pending | Poll::Ready(Err(_)) if written > 0 => Some(Poll::Ready(Ok(written))),
        other => Some(other),
    }
}

/// Runs a non-blocking write on `tcp` once it is writable, registering for readiness when not.
fn poll_io(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    mut op: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        match tcp.poll_write_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        match tcp.try_io(Interest::WRITABLE, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

/// Bytes sent with `sendfile` since the process started.
pub fn sent_bytes() -> u64 {
    SENT.load(Relaxed)
}

/// Whether `b` is backed by a sealed memory file (for tests and metrics).
pub fn is_sealed(b: &Bytes) -> bool {
    b.len() >= SEND_MIN && find(b).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_read_back_and_unregister_on_drop() {
        let data: Vec<u8> = (0..MAP_MIN * 2).map(|i| (i * 7 % 251) as u8).collect();
        let b = seal("test", &data).unwrap();
        assert_eq!(&b[..], &data[..]);
        assert!(is_sealed(&b));
        let part = b.slice(100..100 + SEND_MIN);
        assert_eq!(find(&part).map(|(_, off, _)| off), Some(100));
        let start = b.as_ptr() as usize;
        drop(b);
        assert!(is_sealed(&part), "a slice keeps the mapping alive");
        drop(part);
        assert!(!MAPPINGS.read().unwrap().contains_key(&start));
    }

    #[test]
    fn no_more_memory_files_than_the_descriptor_budget() {
        let data = vec![7u8; MAP_MIN];
        let open = LIVE.load(Relaxed);
        assert!(seal_within("test", &data, None, open + 64).is_ok());
        let err = seal_within("test", &data, None, LIVE.load(Relaxed)).unwrap_err();
        assert!(err.to_string().contains("memory files open already"), "{err}");
        assert!(max_live() >= 16);
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        let hard = before.maximum.unwrap_or(1 << 20);
        if hard > 512 {
            let lowered = Rlimit {
                current: Some(512),
                maximum: before.maximum,
            };
            setrlimit(Resource::Nofile, lowered).unwrap();
        }
        let now = raise_fd_limit();
        match before.maximum {
            Some(hard) => assert_eq!(now, Some(hard)),
            // unlimited: raised as far as the kernel's nr_open allows
            None => assert!(now.is_none_or(|n| n > 512), "{now:?}"),
        }
    }

    /// Sends `body` through `poll_write_vectored` over loopback TCP; returns what arrived.
    async fn send_over_tcp(body: &Bytes) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tx = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut rx, _) = listener.accept().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut sent = 0;
        while sent < body.len() {
            let rest = body.slice(sent..);
            let n = std::future::poll_fn(|cx| {
                poll_write_vectored(&tx, cx, &[io::IoSlice::new(&rest)]).expect("a sealed body")
            })
            .await
            .unwrap();
            sent += n;
        }
        drop(tx);
        reader.await.unwrap()
    }

    #[tokio::test]
    async fn an_unchanged_file_is_sent_from_itself_a_changed_one_from_the_sealed_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("photo.jpg");
        let data: Vec<u8> = (0..MAP_MIN * 3).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // read as if well after its last change
        let later = std::time::SystemTime::now() + RACY_MARGIN * 2;
        let body = seal_file("test", &data, &file, later).unwrap();
        drop(file);

        let before = SENT_FROM_ORIGIN.load(Relaxed);
        assert_eq!(send_over_tcp(&body).await, data);
        assert!(
            SENT_FROM_ORIGIN.load(Relaxed) >= before + data.len() as u64,
            "read from the original file while it is unchanged"
        );

        // rewritten in place with the same size, its modification time set back as a write
        // within one tick of the clock would leave it: only the change time tells
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let other: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
        std::fs::write(&path, &other).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(send_over_tcp(&body).await == data, "the sealed copy, as cached");
    }

    #[tokio::test]
    async fn a_file_changed_just_before_it_was_read_is_never_sent_from_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.jpg");
        let data = vec![7u8; MAP_MIN * 2];
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let body = seal_file("test", &data, &file, std::time::SystemTime::now()).unwrap();
        let (_, _, origin) = find(&body).expect("a sealed body");
        assert!(origin.is_none(), "a later write in the same tick would not show");
        assert_eq!(send_over_tcp(&body).await, data);
    }

    #[test]
    fn heap_bytes_are_not_sealed() {
        assert!(!is_sealed(&Bytes::from(vec![1u8; MAP_MIN])));
    }
}
