//! Tensors: a shape, the backend that holds the data, and an opaque storage that only that
//! backend knows how to read. f32 is the one compute dtype (DESIGN.md); other dtypes are
//! converted on the way in (see `io`).

use crate::device::BackendKind;
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
    /// Number of f32 elements.
    fn len(&self) -> usize;
    /// No elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A deep copy, on the same device (used for copy-on-write).
    fn duplicate(&self) -> Result<Box<dyn Storage>>;
}

/// A row-major, contiguous f32 tensor on one backend. Cloning is cheap (shared storage);
/// in-place ops go through [`Tensor::storage_mut`], which copies first if the storage is
/// shared, so every backend has the same value semantics.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    device: BackendKind,
    storage: Arc<dyn Storage>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?} on {})", self.shape, self.device)
    }
}

impl Tensor {
    /// Wrap a backend's storage. The storage must hold exactly `numel(shape)` elements.
    pub fn from_storage(
        shape: &[usize],
        device: BackendKind,
        storage: Box<dyn Storage>,
    ) -> Result<Self> {
        let n = numel(shape);
        if storage.len() != n {
            return Err(BellaError::invalid(format!(
                "storage of {} elements for shape {:?} ({} elements)",
                storage.len(),
                shape,
                n
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            device,
            storage: Arc::from(storage),
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
