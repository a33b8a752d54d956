//! The shared test bodies of `bella::testing`, instantiated per backend: every op against the
//! float64 oracle (`bella::oracle`) on fresh random inputs, norm-wise and element-wise. The
//! fast CPU backend is checked like every other. A backend that is not built or not present
//! is skipped with a notice, unless `BELLA_REQUIRE` names it (then the test fails).
//!
//! Run one backend: `cargo test --test cross_backend cpu` (or `wgpu`, `cuda`, `ptx_sim`).

use bella::BackendKind;

mod cpu {
    use super::*;
    bella::backend_tests!(BackendKind::Cpu);
}

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
