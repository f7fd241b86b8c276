//! libnftables in-process: the same library the `nft` binary is a thin
//! front end of, loaded with `dlopen` at run time.
//!
//! Why:
//! - Spawning `nft` per firewall change costs a fork of the (large)
//!   daemon, an exec, the dynamic linking of libnftables and its
//!   dependencies and a JSON parser start-up: 5-30 ms per change, most of
//!   a `network create`. A context kept open in the daemon costs only the
//!   kernel round trips of the batch itself.
//! - `dlopen` instead of linking: the binary builds and runs without
//!   libnftables' development files, and a host without the library (or
//!   with an older, incompatible one) still works through the binary
//!   ([`crate::firewall::Nft`] falls back to it).
//! - `libnftables.so.1` is the soname since nftables 0.9.1, when
//!   `nft_run_cmd_from_buffer` took its current `(ctx, const char *)`
//!   signature; the symbols used here have not changed since.
//! - A context is not thread-safe, and the library has some process-wide
//!   state (its GMP allocator hooks, table caches set up at context
//!   creation): every call into it runs under one process-wide lock. The
//!   daemon has one context, so this costs nothing. A context's netlink socket belongs to the netns of the thread that
//!   creates it, so the context is created eagerly in [`NftLib::open`],
//!   on a daemon thread (they never change netns).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NftLibError {
    #[error("cannot load libnftables: {0}")]
    Load(String),
    #[error("libnftables: nft_ctx_new failed")]
    Context,
    #[error("the nftables command contains a NUL byte")]
    Nul,
    #[error("{0}")]
    Command(String),
}

/// `NFT_CTX_DEFAULT`.
const CTX_DEFAULT: u32 = 0;
/// `NFT_CTX_OUTPUT_HANDLE`: rule handles in listings (to delete rules).
const OUTPUT_HANDLE: c_uint = 1 << 3;
/// `NFT_CTX_OUTPUT_JSON`: JSON listings, and JSON input is tried first.
const OUTPUT_JSON: c_uint = 1 << 4;

/// The library's entry points (libnftables.h).
struct Api {
    ctx_new: unsafe extern "C" fn(u32) -> *mut c_void,
    ctx_free: unsafe extern "C" fn(*mut c_void),
    output_set_flags: unsafe extern "C" fn(*mut c_void, c_uint),
    buffer_output: unsafe extern "C" fn(*mut c_void) -> c_int,
    buffer_error: unsafe extern "C" fn(*mut c_void) -> c_int,
    get_output: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    get_error: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    run: unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
}

/// Serialises every call into the library (see module doc).
static LIB_LOCK: Mutex<()> = Mutex::new(());

fn lib_lock() -> std::sync::MutexGuard<'static, ()> {
    LIB_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Loaded once per process and never unloaded (contexts may live as long).
fn api() -> Result<&'static Api, NftLibError> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load)
        .as_ref()
        .map_err(|e| NftLibError::Load(e.clone()))
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-NULL, NUL-terminated (above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

fn load() -> Result<Api, String> {
    let name = c"libnftables.so.1";
    // SAFETY: a valid C string; the handle is intentionally never closed.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return Err(dl_error());
    }
    let sym = |s: &CStr| -> Result<*mut c_void, String> {
        // SAFETY: `h` is a live handle, `s` a valid C string.
        let p = unsafe { libc::dlsym(h, s.as_ptr()) };
        if p.is_null() {
            Err(format!("{}: {}", s.to_string_lossy(), dl_error()))
        } else {
            Ok(p)
        }
    };
    // SAFETY: each symbol is transmuted to the signature libnftables.h
    // declares for it (stable since soname 1).
    unsafe {
        Ok(Api {
            ctx_new: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(u32) -> *mut c_void>(
                sym(c"nft_ctx_new")?,
            ),
            ctx_free: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(sym(
                c"nft_ctx_free",
            )?),
            output_set_flags: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void, c_uint),
            >(sym(c"nft_ctx_output_set_flags")?),
            buffer_output: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> c_int,
            >(sym(c"nft_ctx_buffer_output")?),
            buffer_error: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> c_int,
            >(sym(c"nft_ctx_buffer_error")?),
            get_output: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> *const c_char,
            >(sym(c"nft_ctx_get_output_buffer")?),
            get_error: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> *const c_char,
            >(sym(c"nft_ctx_get_error_buffer")?),
            run: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
            >(sym(c"nft_run_cmd_from_buffer")?),
        })
    }
}

/// A context pointer; only ever used under [`NftLib::ctx`]'s lock.
struct Ctx(*mut c_void);
// SAFETY: the context is used by one thread at a time (the mutex) and has
// no thread affinity.
unsafe impl Send for Ctx {}

/// One libnftables context with buffered output and error streams.
pub struct NftLib {
    api: &'static Api,
    ctx: Mutex<Ctx>,
}

impl NftLib {
    /// Load the library (once per process) and create a context in the
    /// calling thread's netns.
    pub fn open() -> Result<Self, NftLibError> {
        let api = api()?;
        let _g = lib_lock();
        // SAFETY: plain constructor; NULL is checked.
        let ctx = unsafe { (api.ctx_new)(CTX_DEFAULT) };
        if ctx.is_null() {
            return Err(NftLibError::Context);
        }
        // SAFETY: `ctx` is a live context. Buffering keeps the library off
        // the daemon's stdout/stderr.
        let ok = unsafe {
            (api.output_set_flags)(ctx, OUTPUT_JSON | OUTPUT_HANDLE);
            (api.buffer_output)(ctx) == 0 && (api.buffer_error)(ctx) == 0
        };
        if !ok {
            // SAFETY: created above, not shared.
            unsafe { (api.ctx_free)(ctx) };
            return Err(NftLibError::Context);
        }
        Ok(NftLib {
            api,
            ctx: Mutex::new(Ctx(ctx)),
        })
    }

    /// Run one command buffer (nft syntax or a JSON batch, applied as one
    /// transaction); returns the output (JSON for listings).
    pub fn run(&self, cmd: &str) -> Result<String, NftLibError> {
        let c = CString::new(cmd).map_err(|_| NftLibError::Nul)?;
        let _g = lib_lock();
        let ctx = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `ctx.0` is live and used only under this lock; the
        // buffers it returns are owned by the context and copied before
        // the lock is released. Reading both buffers also resets them.
        let (rc, out, err) = unsafe {
            let rc = (self.api.run)(ctx.0, c.as_ptr());
            let copy = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let out = copy((self.api.get_output)(ctx.0));
            let err = copy((self.api.get_error)(ctx.0));
            (rc, out, err)
        };
        drop(ctx);
        if rc != 0 {
            let err = err.trim();
            return Err(NftLibError::Command(if err.is_empty() {
                format!("nftables command failed ({rc})")
            } else {
                err.to_string()
            }));
        }
        Ok(out)
    }
}

impl Drop for NftLib {
    fn drop(&mut self) {
        let _g = lib_lock();
        let ctx = self.ctx.get_mut().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the context is ours and no longer reachable.
        unsafe { (self.api.ctx_free)(ctx.0) };
    }
}
