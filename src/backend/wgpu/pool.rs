//! Pooled device buffers and the tensor storage that returns its buffer to the pool.
//!
//! Buffers are recycled by (size bucket, usage): sizes round up to a power of two (at least
//! 256 bytes), so a training loop that allocates the same shapes every step stops creating
//! buffers after its first step. Reuse is safe without waiting: queue writes and dispatches
//! that touch a recycled buffer are ordered after every earlier submission.

use super::gpu::{Gpu, NAME};
use super::Inner;
use crate::error::{BellaError, Result};
use crate::tensor::Storage;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);
pub const UNIFORM: wgpu::BufferUsages =
    wgpu::BufferUsages::UNIFORM.union(wgpu::BufferUsages::COPY_DST);
pub const READBACK: wgpu::BufferUsages =
    wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

/// Free buffers kept for reuse beyond this are released to the driver.
const MAX_CACHED_BYTES: u64 = 1 << 30;

#[derive(Default)]
pub struct Pool {
    free: Mutex<FreeLists>,
}

#[derive(Default)]
struct FreeLists {
    by_key: HashMap<(u64, u32), Vec<wgpu::Buffer>>,
    bytes: u64,
}

impl Pool {
    fn bucket(gpu: &Gpu, bytes: u64) -> u64 {
        let pow2 = bytes.max(256).next_power_of_two();
        if pow2 <= gpu.limits.max_buffer_size {
            pow2
        } else {
            bytes.div_ceil(256) * 256
        }
    }

    /// A buffer of at least `bytes` bytes (contents undefined).
    pub fn take(&self, gpu: &Gpu, bytes: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        if bytes > gpu.limits.max_buffer_size {
            return Err(BellaError::device(
                NAME,
                format!(
                    "a buffer of {bytes} bytes exceeds the adapter's max_buffer_size of {} bytes",
                    gpu.limits.max_buffer_size
                ),
            ));
        }
        let size = Self::bucket(gpu, bytes);
        let key = (size, usage.bits());
        if let Ok(mut free) = self.free.lock() {
            if let Some(buf) = free.by_key.get_mut(&key).and_then(|v| v.pop()) {
                free.bytes -= size;
                return Ok(buf);
            }
        }
        gpu.scoped("allocating a buffer", || {
            Ok(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bella"),
                size,
                usage,
                mapped_at_creation: false,
            }))
        })
    }

    pub fn give(&self, buf: wgpu::Buffer) {
        let size = buf.size();
        if let Ok(mut free) = self.free.lock() {
            if free.bytes + size <= MAX_CACHED_BYTES {
                free.bytes += size;
                free.by_key
                    .entry((size, buf.usage().bits()))
                    .or_default()
                    .push(buf);
            }
        }
    }
}

/// A tensor's device memory: `len` f32 values at the start of a pooled buffer.
pub struct WgpuStorage {
    buffer: Option<wgpu::Buffer>,
    len: usize,
    ctx: Arc<Inner>,
}

impl WgpuStorage {
    /// Uninitialised storage for `len` values.
    pub fn new(ctx: &Arc<Inner>, len: usize) -> Result<WgpuStorage> {
        let buffer = ctx.pool.take(&ctx.gpu, bytes_of(len), STORAGE)?;
        Ok(WgpuStorage {
            buffer: Some(buffer),
            len,
            ctx: ctx.clone(),
        })
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// Bytes a binding of this storage covers (never 0: empty bindings are invalid).
    pub fn binding_bytes(&self) -> u64 {
        bytes_of(self.len)
    }
}

/// Bytes for `len` f32 values, at least 4.
pub fn bytes_of(len: usize) -> u64 {
    (len.max(1) * 4) as u64
}

impl Drop for WgpuStorage {
    fn drop(&mut self) {
        if let Some(buf) = self.buffer.take() {
            self.ctx.pool.give(buf);
        }
    }
}

impl Storage for WgpuStorage {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn len(&self) -> usize {
        self.len
    }
    fn duplicate(&self) -> Result<Box<dyn Storage>> {
        let copy = WgpuStorage::new(&self.ctx, self.len)?;
        let gpu = &self.ctx.gpu;
        gpu.scoped("copying a tensor", || {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(self.buffer(), 0, copy.buffer(), 0, bytes_of(self.len));
            gpu.queue.submit([enc.finish()]);
            Ok(())
        })?;
        Ok(Box::new(copy))
    }
}
