//! The small driver surface shared by the CUDA backend (cudarc) and the PTX simulator:
//! allocate, copy, load a module, launch. The host launch code in `backend::ptx` is written
//! once against this trait, so a bug in a kernel *or* in its launch code shows up on the
//! simulator too.

use crate::backend::BackendKind;
use crate::error::Result;

/// One kernel argument, in the order of the kernel's `.param` list.
pub enum Param<'a, B> {
    /// A device pointer (`.param .u64`): the buffer's base address plus `byte_offset`.
    Ptr {
        buf: &'a B,
        byte_offset: usize,
    },
    U32(u32),
    I32(i32),
    F32(f32),
    U64(u64),
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// Device properties the launch code sizes its grids from.
#[derive(Clone, Debug)]
pub struct DeviceProps {
    pub name: String,
    pub max_grid: [u32; 3],
    pub max_threads_per_block: u32,
    pub max_shared_per_block: u32,
    pub sm_count: u32,
}

pub trait Driver: Send + Sync + 'static {
    /// A device allocation of f32 elements.
    type Buf: Send + Sync + 'static;

    fn kind(&self) -> BackendKind;
    fn props(&self) -> &DeviceProps;
    /// What may still be allocated (free device memory on CUDA, host memory on the simulator).
    fn memory_budget(&self) -> crate::backend::MemoryBudget;
    fn alloc_zeroed(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf, len: usize) -> Result<Vec<f32>>;
    /// Number of f32 elements in the allocation.
    fn buf_len(&self, buf: &Self::Buf) -> usize;
    /// Device-to-device copy of `len` elements.
    fn copy(
        &self,
        src: &Self::Buf,
        src_off: usize,
        dst: &Self::Buf,
        dst_off: usize,
        len: usize,
    ) -> Result<()>;
    /// Load (and cache) a PTX module under `name`; loading the same name twice is a no-op.
    fn load_module(&self, name: &str, ptx: &str) -> Result<()>;
    /// Launch `kernel` of module `module`. Errors name the kernel.
    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: LaunchConfig,
        params: &[Param<'_, Self::Buf>],
    ) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
}
