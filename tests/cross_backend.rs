//! The shared test bodies of `bella::testing`, instantiated per backend: every op against the
//! CPU reference on fresh random inputs. A backend that is not built or not present is
//! skipped with a notice, unless `BELLA_REQUIRE` names it (then the test fails).
//!
//! Run one backend: `cargo test --test cross_backend wgpu` (or `cuda`, `ptx_sim`).

use bella::BackendKind;

mod wgpu {
    use super::*;
    bella::backend_tests!(BackendKind::Wgpu);
}

mod cuda {
    use super::*;
    bella::backend_tests!(BackendKind::Cuda);
}

mod ptx_sim {
    use super::*;
    bella::backend_tests!(BackendKind::PtxSim);
}
