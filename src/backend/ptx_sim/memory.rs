//! The simulated memories and their checker.
//!
//! - Global: device buffers of 32-bit words (atomics, so CTAs can run in parallel). Each buffer
//!   lives in its own 64 GiB slot of the address space, so a stray address lands in no buffer
//!   instead of in a neighbour. A launch sees only the buffers passed as parameters.
//! - Shared: one array per CTA with a shadow word per 32-bit word that records who wrote and
//!   read it in the current barrier interval: reads of never-written words and two threads
//!   touching a word (one of them writing) between barriers are errors. Words a `cp.async`
//!   will write are marked in flight until the issuing thread's wait lands them (see
//!   `async_copy`): touching them before is an error. The shadow is per 4-byte word, so
//!   16-bit stores by two threads into one word between barriers are reported as a race.
//! - Local: a private array per thread. Param: the launch's parameter buffer, read-only.
//! - Generic addresses: global addresses as they are, shared and local through windows.
//!
//! Faults are messages without context; the executor adds kernel, line and thread.

use super::async_copy::{AsyncCopies, PendingCopy};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

/// Generic address of shared offset 0 (`cvta.shared`).
pub const SHARED_WINDOW: u64 = 1 << 62;
/// Generic address of local offset 0 (`cvta.local`).
pub const LOCAL_WINDOW: u64 = 3 << 61;
/// Each global buffer owns `1 << SLOT_BITS` bytes of address space.
pub const SLOT_BITS: u32 = 36;
/// Slots below the shared window.
pub const SLOTS: u64 = SHARED_WINDOW >> SLOT_BITS;

/// A device allocation.
pub struct GlobalBuf {
    pub base: u64,
    pub words: Box<[AtomicU32]>,
}

impl GlobalBuf {
    pub fn new(base: u64, data: impl Iterator<Item = u32>) -> Self {
        GlobalBuf {
            base,
            words: data.map(AtomicU32::new).collect(),
        }
    }
    pub fn bytes(&self) -> u64 {
        self.words.len() as u64 * 4
    }
}

/// The buffers one launch may touch, with the parameter names they came from.
pub struct GlobalMap {
    bufs: Vec<(Arc<GlobalBuf>, String)>,
}

impl GlobalMap {
    pub fn new() -> Self {
        GlobalMap { bufs: Vec::new() }
    }
    /// Make `buf` reachable; `param` names it in errors.
    pub fn add(&mut self, buf: Arc<GlobalBuf>, param: &str) {
        match self.bufs.iter_mut().find(|(b, _)| Arc::ptr_eq(b, &buf)) {
            Some((_, names)) => {
                names.push_str(", ");
                names.push_str(param);
            }
            None => self.bufs.push((buf, param.to_string())),
        }
    }

    /// The 32-byte sectors of the buffer whose address slot is `slot` (0 if none is bound).
    pub fn sectors_of_slot(&self, slot: u64) -> u64 {
        self.bufs
            .iter()
            .find(|(b, _)| b.base >> SLOT_BITS == slot)
            .map_or(0, |(b, _)| b.bytes().div_ceil(32))
    }

    /// The buffer and word index of an in-bounds, aligned access of `bytes` bytes.
    fn locate(&self, addr: u64, bytes: u32, what: &str) -> Result<(&GlobalBuf, usize), String> {
        let slot = addr >> SLOT_BITS;
        let Some((buf, names)) = self.bufs.iter().find(|(b, _)| b.base >> SLOT_BITS == slot) else {
            return Err(format!(
                "global {what} of {bytes} bytes at {addr:#x}: not inside any buffer passed to \
                 this launch"
            ));
        };
        let off = addr - buf.base;
        if off + bytes as u64 > buf.bytes() {
            return Err(format!(
                "out-of-bounds global {what} of {bytes} bytes at {addr:#x}: byte {off} of the \
                 buffer of parameter {names} ({} bytes, {} f32 elements)",
                buf.bytes(),
                buf.words.len()
            ));
        }
        Ok((buf, (off / 4) as usize))
    }

    pub fn load(&self, addr: u64, bytes: u32) -> Result<u64, String> {
        let (buf, w) = self.locate(addr, bytes, "read")?;
        Ok(match bytes {
            8 => buf.words[w].load(Relaxed) as u64 | (buf.words[w + 1].load(Relaxed) as u64) << 32,
            4 => buf.words[w].load(Relaxed) as u64,
            _ => sub_word(buf.words[w].load(Relaxed), addr, bytes),
        })
    }

    pub fn store(&self, addr: u64, bytes: u32, v: u64) -> Result<(), String> {
        let (buf, w) = self.locate(addr, bytes, "write")?;
        match bytes {
            8 => {
                buf.words[w].store(v as u32, Relaxed);
                buf.words[w + 1].store((v >> 32) as u32, Relaxed);
            }
            4 => buf.words[w].store(v as u32, Relaxed),
            _ => {
                let (mask, shift) = sub_word_mask(addr, bytes);
                let _ = buf.words[w].fetch_update(Relaxed, Relaxed, |old| {
                    Some((old & !mask) | ((v as u32) << shift & mask))
                });
            }
        }
        Ok(())
    }

    /// Atomic read-modify-write of a 32-bit word: `f(old)` is the new value; returns `old`.
    pub fn atomic(&self, addr: u64, f: impl Fn(u32) -> u32) -> Result<u32, String> {
        let (buf, w) = self.locate(addr, 4, "atomic")?;
        Ok(buf.words[w]
            .fetch_update(Relaxed, Relaxed, |old| Some(f(old)))
            .expect("the update always succeeds"))
    }
}

impl Default for GlobalMap {
    fn default() -> Self {
        Self::new()
    }
}

fn sub_word_mask(addr: u64, bytes: u32) -> (u32, u32) {
    let shift = (addr % 4) as u32 * 8;
    let mask = if bytes == 1 { 0xff } else { 0xffff };
    (mask << shift, shift)
}

fn sub_word(word: u32, addr: u64, bytes: u32) -> u64 {
    let (mask, shift) = sub_word_mask(addr, bytes);
    ((word & mask) >> shift) as u64
}

/// The access must be aligned to its full size (a `.v4.f32` access to 16 bytes).
pub fn check_alignment(space: &str, addr: u64, bytes: u32, write: bool) -> Result<(), String> {
    if !addr.is_multiple_of(bytes as u64) {
        let what = if write { "write" } else { "read" };
        return Err(format!(
            "misaligned {space} {what} of {bytes} bytes at {addr:#x} (needs {bytes}-byte alignment)"
        ));
    }
    Ok(())
}

/// Who last wrote and read one shared word, in which barrier interval (epoch). Two reader
/// slots are enough to name, for any writer, another thread that read the word: the first
/// reader of the interval, and the latest reader different from it.
#[derive(Clone, Copy, Default)]
struct Shadow {
    written: u32,
    writer: u32,
    read: u32,
    reader: u32,
    other_reader: u32,
    /// 0, or 1 + the thread whose `cp.async` to this word is in flight
    in_flight: u32,
}

/// No thread (an empty reader slot).
const NONE: u32 = u32::MAX;
/// `writer` value for words last updated by atomics (which do not race with each other).
const ATOMIC: u32 = u32::MAX - 1;

/// The shared memory of the CTA being run, with its checker.
pub struct SharedMem {
    words: Vec<u32>,
    shadow: Vec<Shadow>,
    bytes: u32,
    /// The current barrier interval; intervals are numbered across the CTAs this memory
    /// serves, so a new CTA starts with every word "never written" without clearing.
    epoch: u32,
    cta_first_epoch: u32,
    /// `block.x, block.y` to name threads in messages.
    block: [u32; 3],
    copies: AsyncCopies,
}

/// `(x,y,z)` of a linear thread index.
pub fn thread_name(linear: u32, block: [u32; 3]) -> String {
    let x = linear % block[0];
    let y = linear / block[0] % block[1];
    let z = linear / (block[0] * block[1]);
    format!("({x},{y},{z})")
}

impl SharedMem {
    pub fn new(bytes: u32, block: [u32; 3]) -> Self {
        let n = bytes.div_ceil(4) as usize;
        SharedMem {
            words: vec![0; n],
            shadow: vec![Shadow::default(); n],
            bytes,
            epoch: 0,
            cta_first_epoch: 1,
            block,
            copies: AsyncCopies::new(block.iter().product::<u32>() as usize),
        }
    }

    pub fn begin_cta(&mut self) -> Result<(), String> {
        let shadow = &mut self.shadow;
        self.copies.reset(|c| {
            for w in c.dst / 4..c.dst / 4 + c.nwords as u64 {
                shadow[w as usize].in_flight = 0;
            }
        });
        self.barrier()?;
        self.cta_first_epoch = self.epoch;
        Ok(())
    }

    /// A barrier completed: accesses before it are ordered before those after it.
    pub fn barrier(&mut self) -> Result<(), String> {
        self.epoch = self
            .epoch
            .checked_add(1)
            .ok_or("more than 2^32 barrier intervals in one launch")?;
        Ok(())
    }

    fn word(&self, addr: u64, bytes: u32, what: &str) -> Result<usize, String> {
        if addr.saturating_add(bytes as u64) > self.bytes as u64 {
            return Err(format!(
                "out-of-bounds shared {what} of {bytes} bytes at {addr:#x} (the CTA has {} \
                 bytes of shared memory)",
                self.bytes
            ));
        }
        Ok((addr / 4) as usize)
    }

    fn note_read(&mut self, w: usize, addr: u64, t: u32) -> Result<(), String> {
        let s = self.shadow[w];
        if s.in_flight != 0 {
            return Err(self.in_flight(addr, s.in_flight - 1, "read"));
        }
        if s.written < self.cta_first_epoch {
            return Err(format!(
                "read of uninitialised shared memory at {:#x} (no thread of this CTA wrote it)",
                addr & !3
            ));
        }
        if s.written == self.epoch && s.writer != t {
            return Err(format!(
                "shared memory race at {:#x}: read after a write by {} with no barrier between",
                addr & !3,
                self.who(s.writer)
            ));
        }
        let s = &mut self.shadow[w];
        if s.read != self.epoch {
            s.read = self.epoch;
            s.reader = t;
            s.other_reader = NONE;
        } else if s.reader != t {
            s.other_reader = t;
        }
        Ok(())
    }

    fn note_write(&mut self, w: usize, addr: u64, t: u32, atomic: bool) -> Result<(), String> {
        let s = self.shadow[w];
        if s.in_flight != 0 {
            return Err(self.in_flight(addr, s.in_flight - 1, "written"));
        }
        let writer = if atomic { ATOMIC } else { t };
        if s.written == self.epoch && s.writer != writer {
            return Err(format!(
                "shared memory race at {:#x}: written by {} and by {} with no barrier between",
                addr & !3,
                self.who(s.writer),
                self.who(t)
            ));
        }
        if s.read == self.epoch && !atomic {
            let other = [s.reader, s.other_reader]
                .into_iter()
                .find(|&r| r != t && r != NONE);
            if let Some(r) = other {
                return Err(format!(
                    "shared memory race at {:#x}: written after a read by {} with no barrier \
                     between",
                    addr & !3,
                    self.who(r)
                ));
            }
        }
        let s = &mut self.shadow[w];
        s.written = self.epoch;
        s.writer = writer;
        Ok(())
    }

    /// The race of touching a word thread `issuer`'s `cp.async` has in flight.
    fn in_flight(&self, addr: u64, issuer: u32, what: &str) -> String {
        let line = self
            .copies
            .find(issuer, addr & !3)
            .map_or(String::new(), |c| format!(" at line {}", c.line));
        format!(
            "shared memory race at {:#x}: {what} while the cp.async of {}{line} to it is in \
             flight (its bytes land when that thread's cp.async.wait_group/wait_all covers its \
             group, and other threads may read them only after a barrier that follows)",
            addr & !3,
            self.who(issuer)
        )
    }

    /// Issue thread `t`'s `cp.async` of `words` to the 4-byte aligned `addr` (source line
    /// `line`): the words are in flight until [`SharedMem::async_wait`] lands them. The write
    /// is checked against this interval's accesses now (it may land at any moment).
    pub fn async_issue(
        &mut self,
        addr: u64,
        words: &[u32],
        t: u32,
        line: u32,
    ) -> Result<(), String> {
        let bytes = 4 * words.len() as u32;
        let w0 = self.word(addr, bytes, "cp.async write")?;
        for i in 0..words.len() {
            self.note_write(w0 + i, addr + 4 * i as u64, t, false)?;
        }
        for i in 0..words.len() {
            self.shadow[w0 + i].in_flight = t + 1;
        }
        let mut data = [0u32; 4];
        data[..words.len()].copy_from_slice(words);
        self.copies.issue(
            t,
            PendingCopy {
                dst: addr,
                words: data,
                nwords: words.len() as u8,
                group: 0,
                line,
            },
        );
        Ok(())
    }

    /// `cp.async.commit_group` of thread `t`.
    pub fn async_commit(&mut self, t: u32) {
        self.copies.commit(t);
    }

    /// `cp.async.wait_group n` of thread `t`: land the copies it completes, written by `t`
    /// in the current interval.
    pub fn async_wait(&mut self, t: u32, n: u32) {
        let (words, shadow, epoch) = (&mut self.words, &mut self.shadow, self.epoch);
        self.copies.complete(t, n, |c| {
            let w0 = (c.dst / 4) as usize;
            for i in 0..c.nwords as usize {
                words[w0 + i] = c.words[i];
                let s = &mut shadow[w0 + i];
                s.in_flight = 0;
                s.written = epoch;
                s.writer = t;
            }
        });
    }

    fn who(&self, t: u32) -> String {
        match t {
            ATOMIC => "atomics".to_string(),
            t => format!("thread {}", thread_name(t, self.block)),
        }
    }

    pub fn load(&mut self, addr: u64, bytes: u32, t: u32) -> Result<u64, String> {
        let w = self.word(addr, bytes, "read")?;
        self.note_read(w, addr, t)?;
        Ok(match bytes {
            8 => {
                self.note_read(w + 1, addr + 4, t)?;
                self.words[w] as u64 | (self.words[w + 1] as u64) << 32
            }
            4 => self.words[w] as u64,
            _ => sub_word(self.words[w], addr, bytes),
        })
    }

    pub fn store(&mut self, addr: u64, bytes: u32, v: u64, t: u32) -> Result<(), String> {
        let w = self.word(addr, bytes, "write")?;
        self.note_write(w, addr, t, false)?;
        match bytes {
            8 => {
                self.note_write(w + 1, addr + 4, t, false)?;
                self.words[w] = v as u32;
                self.words[w + 1] = (v >> 32) as u32;
            }
            4 => self.words[w] = v as u32,
            _ => {
                // a sub-word store initialises its whole word (the shadow is per word)
                let (mask, shift) = sub_word_mask(addr, bytes);
                self.words[w] = (self.words[w] & !mask) | ((v as u32) << shift & mask);
            }
        }
        Ok(())
    }

    /// Atomic update of a 32-bit word: returns the old value.
    pub fn atomic(&mut self, addr: u64, t: u32, f: impl Fn(u32) -> u32) -> Result<u32, String> {
        let w = self.word(addr, 4, "atomic")?;
        if self.shadow[w].written < self.cta_first_epoch {
            return Err(format!(
                "atomic on uninitialised shared memory at {addr:#x} (no thread of this CTA wrote it)"
            ));
        }
        self.note_write(w, addr, t, true)?;
        let old = self.words[w];
        self.words[w] = f(old);
        Ok(old)
    }
}

/// Per-thread `.local` memory of a CTA.
pub struct LocalMem {
    words: Vec<u32>,
    per_thread: u32,
}

impl LocalMem {
    pub fn new(per_thread: u32, threads: usize) -> Self {
        LocalMem {
            words: vec![0; per_thread.div_ceil(4) as usize * threads],
            per_thread,
        }
    }
    pub fn clear(&mut self) {
        self.words.fill(0);
    }
    fn word(&self, addr: u64, bytes: u32, t: u32, what: &str) -> Result<usize, String> {
        if addr.saturating_add(bytes as u64) > self.per_thread as u64 {
            return Err(format!(
                "out-of-bounds local {what} of {bytes} bytes at {addr:#x} (the kernel declares \
                 {} bytes of .local per thread)",
                self.per_thread
            ));
        }
        Ok(t as usize * self.per_thread.div_ceil(4) as usize + (addr / 4) as usize)
    }
    pub fn load(&self, addr: u64, bytes: u32, t: u32) -> Result<u64, String> {
        let w = self.word(addr, bytes, t, "read")?;
        Ok(match bytes {
            8 => self.words[w] as u64 | (self.words[w + 1] as u64) << 32,
            4 => self.words[w] as u64,
            _ => sub_word(self.words[w], addr, bytes),
        })
    }
    pub fn store(&mut self, addr: u64, bytes: u32, v: u64, t: u32) -> Result<(), String> {
        let w = self.word(addr, bytes, t, "write")?;
        match bytes {
            8 => {
                self.words[w] = v as u32;
                self.words[w + 1] = (v >> 32) as u32;
            }
            4 => self.words[w] = v as u32,
            _ => {
                let (mask, shift) = sub_word_mask(addr, bytes);
                self.words[w] = (self.words[w] & !mask) | ((v as u32) << shift & mask);
            }
        }
        Ok(())
    }
}

/// Read a little-endian value of `bytes` bytes from the parameter buffer.
pub fn load_param(params: &[u8], addr: u64, bytes: u32) -> Result<u64, String> {
    let start = addr as usize;
    match params.get(start..start.saturating_add(bytes as usize)) {
        Some(b) if addr < params.len() as u64 => {
            let mut v = [0u8; 8];
            v[..b.len()].copy_from_slice(b);
            Ok(u64::from_le_bytes(v))
        }
        _ => Err(format!(
            "out-of-bounds param read of {bytes} bytes at {addr:#x} (the kernel has {} bytes of \
             parameters)",
            params.len()
        )),
    }
}
