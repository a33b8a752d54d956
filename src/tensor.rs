//! Tensors: a shape, an element type, the backend that holds the data, and an opaque storage
//! that only that backend knows how to read. f32 is the compute dtype (DESIGN.md); bf16 and
//! f16 tensors hold the inputs of the products, two elements per 32-bit storage word
//! ([`crate::dtype`]), and every op states which dtypes it takes.

use crate::device::BackendKind;
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Device memory of one backend. Backends downcast to their own concrete type.
pub trait Storage: Any + Send + Sync {
    /// `self` as [`Any`], for the owning backend to downcast.
    fn as_any(&self) -> &dyn Any;
    /// `self` as mutable [`Any`], for the owning backend to downcast.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Number of 32-bit words: the element count of an f32 tensor, `ceil(n / 2)` of a
    /// bf16/f16 one ([`DType::words`]).
    fn len(&self) -> usize;
    /// No elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A deep copy, on the same device (used for copy-on-write).
    fn duplicate(&self) -> Result<Box<dyn Storage>>;
}

/// A row-major, contiguous tensor on one backend, f32 unless made as bf16/f16 (see
/// [`crate::dtype`]). Cloning is cheap (shared storage);
/// in-place ops go through [`Tensor::storage_mut`], which copies first if the storage is
/// shared, so every backend has the same value semantics.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    device: BackendKind,
    storage: Arc<dyn Storage>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({:?} {} on {})",
            self.shape, self.dtype, self.device
        )
    }
}

impl Tensor {
    /// Wrap a backend's storage as an f32 tensor. The storage must hold exactly
    /// `numel(shape)` words.
    pub fn from_storage(
        shape: &[usize],
        device: BackendKind,
        storage: Box<dyn Storage>,
    ) -> Result<Self> {
        Self::from_storage_as(shape, DType::F32, device, storage)
    }

    /// Wrap a backend's storage as a tensor of `dtype`: the storage must hold exactly
    /// `dtype.words(numel(shape))` words, laid out as [`crate::dtype`] says.
    pub fn from_storage_as(
        shape: &[usize],
        dtype: DType,
        device: BackendKind,
        storage: Box<dyn Storage>,
    ) -> Result<Self> {
        let n = numel(shape);
        if storage.len() != dtype.words(n) {
            return Err(BellaError::invalid(format!(
                "storage of {} words for a {dtype} tensor of shape {:?} ({n} elements, {} words)",
                storage.len(),
                shape,
                dtype.words(n)
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype,
            device,
            storage: Arc::from(storage),
        })
    }

    /// The same storage seen as an f32 tensor of its `[words]` (what the backends move to and
    /// from the host, and what `download_words` returns).
    pub fn words_view(&self) -> Tensor {
        Tensor {
            shape: vec![self.storage.len()],
            dtype: DType::F32,
            device: self.device,
            storage: self.storage.clone(),
        }
    }

    /// The same storage as a tensor of `shape` and `dtype` (the inverse of
    /// [`Tensor::words_view`]); the word count must match.
    pub fn reinterpret(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = numel(shape);
        if self.storage.len() != dtype.words(n) {
            return Err(BellaError::invalid(format!(
                "cannot see {} storage words as a {dtype} tensor of shape {shape:?}",
                self.storage.len()
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype,
            device: self.device,
            storage: self.storage.clone(),
        })
    }

    /// The dimensions, outermost first (particles lead: K is dimension 0 where present).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of dimensions (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Number of elements, the product of the shape (1 for a scalar, 0 if any dim is 0).
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    /// The element type; ops refuse the dtypes they do not take.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The backend that holds the data; ops refuse tensors of another backend.
    pub fn device(&self) -> BackendKind {
        self.device
    }
    /// The backend's storage, shared (read-only).
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Exclusive access to the storage, copying it first if another tensor shares it.
    pub fn storage_mut(&mut self) -> Result<&mut dyn Storage> {
        if Arc::get_mut(&mut self.storage).is_none() {
            self.storage = Arc::from(self.storage.duplicate()?);
        }
        Ok(Arc::get_mut(&mut self.storage).expect("storage was just made unique"))
    }

    /// Same data, new shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(BellaError::invalid(format!(
                "cannot reshape {:?} to {:?}",
                self.shape, shape
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype: self.dtype,
            device: self.device,
            storage: self.storage.clone(),
        })
    }

    /// True when both tensors share one storage (aliasing checks for in-place ops).
    pub fn same_storage(&self, other: &Tensor) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.storage), Arc::as_ptr(&other.storage))
    }
}

/// Number of elements of a tensor of this shape (1 for `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A run of per-particle blocks inside a tensor: block `k` starts at `offset + k * stride`.
/// `stride == 0` means one block shared by every particle. This is how layers see their
/// slice of the `[K, D]` parameter arena, and how a shared input is broadcast.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    /// The tensor the blocks live in.
    pub tensor: &'a Tensor,
    /// Element index of block 0.
    pub offset: usize,
    /// Elements from one block to the next; 0 = one shared block.
    pub stride: usize,
}

impl<'a> Strided<'a> {
    /// The whole tensor as `count` contiguous blocks (or one shared block when `shared`).
    pub fn contiguous(tensor: &'a Tensor, block: usize, shared: bool) -> Self {
        Strided {
            tensor,
            offset: 0,
            stride: if shared { 0 } else { block },
        }
    }
    /// Does a block of `block` elements for each of `count` particles fit in the tensor?
    pub fn fits(&self, count: usize, block: usize) -> bool {
        let last = if count == 0 {
            0
        } else {
            self.offset + (count - 1) * self.stride + block
        };
        last <= self.tensor.numel()
    }
}

/// Where an op writes per-particle blocks into an existing tensor (same layout as [`Strided`]).
#[derive(Clone, Copy, Debug)]
pub struct OutSlot {
    /// Element index of block 0 in the output tensor.
    pub offset: usize,
    /// Elements from one block to the next.
    pub stride: usize,
}
