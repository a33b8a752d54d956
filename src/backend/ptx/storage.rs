//! Device memory of a [`Driver`], as a [`Storage`] the tensor layer can hold.

use super::driver::Driver;
use crate::error::Result;
use crate::tensor::Storage;
use std::any::Any;
use std::sync::Arc;

/// One device allocation. `len` is the tensor's element count (the driver may have
/// allocated more, e.g. one element for an empty tensor). Keeps its driver alive, so a
/// tensor can outlive the backend object that made it.
pub struct PtxStorage<D: Driver> {
    pub(crate) buf: D::Buf,
    pub(crate) len: usize,
    pub(crate) driver: Arc<D>,
}

impl<D: Driver> Storage for PtxStorage<D> {
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
        let buf = self.driver.alloc_zeroed(self.len)?;
        if self.len > 0 {
            self.driver.copy(&self.buf, 0, &buf, 0, self.len)?;
        }
        Ok(Box::new(PtxStorage {
            buf,
            len: self.len,
            driver: self.driver.clone(),
        }))
    }
}
