//! The simulator's counting mode on microkernels whose counts are known by hand: global
//! sectors of coalesced, strided and vector accesses, shared-memory wavefronts of conflicting,
//! conflict-free and broadcast patterns, an FMA loop, divergent branches and loops. Every
//! count is checked exactly. Driven through the `Driver` surface, as the backend drives it.
#![cfg(feature = "ptx-sim")]

use bella::backend::ptx::driver::{Driver, LaunchConfig, Param};
use bella::backend::ptx_sim::profile::{Class, InstCounts};
use bella::backend::ptx_sim::{Counters, SimBuf, SimDriver};

const HEADER: &str = ".version 7.8\n.target sm_80\n.address_size 64\n";

/// A driver with `src` loaded as module `m`.
fn driver(src: &str) -> SimDriver {
    let d = SimDriver::new();
    d.load_module("m", &format!("{HEADER}{src}"))
        .expect("the kernel parses");
    d
}

/// Run `kernel` of module `m` once with counting on; its counters.
fn profile_on(
    d: &SimDriver,
    kernel: &str,
    grid: u32,
    block: u32,
    params: &[Param<'_, SimBuf>],
) -> Counters {
    let prof = d.profiler();
    prof.set_enabled(true);
    let cfg = LaunchConfig {
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        shared_bytes: 0,
    };
    d.launch("m", kernel, cfg, params).expect("the kernel runs");
    let mut log = prof.take();
    assert_eq!(log.len(), 1, "one launch logged");
    let p = log.pop().unwrap();
    assert_eq!(
        (p.kernel.as_str(), p.grid, p.block),
        (kernel, cfg.grid, cfg.block)
    );
    p.counters
}

fn ptr(buf: &SimBuf) -> Param<'_, SimBuf> {
    Param::Ptr {
        buf,
        byte_offset: 0,
    }
}

/// Counts with the given classes set and every other class zero.
fn counts(classes: &[(Class, u64)]) -> InstCounts {
    let mut out = InstCounts::default();
    for &(c, n) in classes {
        out.add(c, n);
    }
    out
}

// ---- global memory

/// `out[i] = in[i * stride]` for `i < n`, one element per thread.
const COPY: &str = r#"
.visible .entry copy(
	.param .u64 p_out,
	.param .u64 p_in,
	.param .u32 p_n,
	.param .u32 p_stride
)
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	.reg .f32 %f<2>;
	.reg .b64 %rd<8>;
	ld.param.u64 %rd0, [p_out];
	cvta.to.global.u64 %rd0, %rd0;
	ld.param.u64 %rd1, [p_in];
	cvta.to.global.u64 %rd1, %rd1;
	ld.param.u32 %r0, [p_n];
	ld.param.u32 %r1, [p_stride];
	mov.u32 %r2, %ctaid.x;
	mov.u32 %r3, %ntid.x;
	mov.u32 %r4, %tid.x;
	mad.lo.u32 %r5, %r2, %r3, %r4;
	setp.ge.u32 %p0, %r5, %r0;
	@%p0 bra DONE;
	mul.lo.u32 %r6, %r5, %r1;
	mul.wide.u32 %rd2, %r6, 4;
	add.u64 %rd3, %rd1, %rd2;
	ld.global.f32 %f0, [%rd3];
	mul.wide.u32 %rd4, %r5, 4;
	add.u64 %rd5, %rd0, %rd4;
	st.global.f32 [%rd5], %f0;
DONE:
	ret;
}
"#;

fn run_copy(n: u32, stride: u32, grid: u32, block: u32) -> Counters {
    let d = driver(COPY);
    let threads = (grid * block) as usize;
    let inp = d
        .upload(&vec![1.5; (threads * stride as usize).max(1)])
        .unwrap();
    let out = d.alloc_zeroed(threads).unwrap();
    let params = [ptr(&out), ptr(&inp), Param::U32(n), Param::U32(stride)];
    profile_on(&d, "copy", grid, block, &params)
}

#[test]
fn coalesced_f32_copy_takes_4_sectors_per_warp_request() {
    let c = run_copy(128, 1, 2, 64);
    assert_eq!((c.ctas, c.warps, c.threads), (2, 4, 128));
    let g = &c.global;
    assert_eq!((g.load_requests, g.load_sectors), (4, 16));
    assert_eq!((g.store_requests, g.store_sectors), (4, 16));
    assert_eq!(
        (g.load_bytes(), g.store_bytes(), g.l2_bytes()),
        (512, 512, 1024)
    );
    assert_eq!(g.sectors_per_load(), 4.0);
    // per warp: 4 ld.param, 3 mov, 4 + 5 integer, bra + ret, one ld and one st
    let per_warp = [
        (Class::LdParam, 4),
        (Class::Move, 3),
        (Class::Integer, 9),
        (Class::Control, 2),
        (Class::LdGlobal, 1),
        (Class::StGlobal, 1),
    ];
    let scaled = |k: u64| per_warp.map(|(c, n)| (c, n * k));
    assert_eq!(c.warp_inst, counts(&scaled(4)));
    // no thread takes the branch: `@%p0 bra` executes (guard true) nowhere
    let mut threads = scaled(128);
    threads[3].1 = 128;
    assert_eq!(c.thread_inst, counts(&threads));
    assert_eq!(c.warp_inst.total(), 4 * 20);
    assert_eq!(c.flops, 0);
    assert_eq!(c.shared, Default::default());
}

#[test]
fn partial_warps_count_requests_only_where_lanes_are_active() {
    // n = 80 of 128 threads: warps 0 and 1 full, warp 2 has 16 active lanes, warp 3 none
    let c = run_copy(80, 1, 2, 64);
    let g = &c.global;
    assert_eq!((g.load_requests, g.load_sectors), (3, 4 + 4 + 2));
    assert_eq!((g.store_requests, g.store_sectors), (3, 10));
    assert_eq!(c.warp_inst.get(Class::LdGlobal), 3);
    assert_eq!(c.warp_inst.get(Class::Integer), 4 * 4 + 3 * 5);
    assert_eq!(c.warp_inst.get(Class::Control), 8);
    assert_eq!(c.thread_inst.get(Class::LdGlobal), 80);
    // 48 threads take the branch, all 128 return
    assert_eq!(c.thread_inst.get(Class::Control), 48 + 128);
}

#[test]
fn stride_32_f32_load_takes_32_sectors_per_request() {
    let c = run_copy(128, 32, 2, 64);
    let g = &c.global;
    assert_eq!((g.load_requests, g.load_sectors), (4, 4 * 32));
    assert_eq!(g.load_bytes(), 4 * 32 * 32);
    assert_eq!(g.sectors_per_load(), 32.0);
    // the stores stay coalesced
    assert_eq!((g.store_requests, g.store_sectors), (4, 16));
}

#[test]
fn a_coalesced_load_off_a_sector_boundary_takes_5_sectors() {
    let d = driver(COPY);
    let inp = d.upload(&[2.0; 64]).unwrap();
    let out = d.alloc_zeroed(32).unwrap();
    let shifted = Param::Ptr {
        buf: &inp,
        byte_offset: 16,
    };
    let params = [ptr(&out), shifted, Param::U32(32), Param::U32(1)];
    let c = profile_on(&d, "copy", 1, 32, &params);
    assert_eq!((c.global.load_requests, c.global.load_sectors), (1, 5));
    assert_eq!((c.global.store_requests, c.global.store_sectors), (1, 4));
}

/// `out4[i] = in4[i]` with 16-byte vector accesses.
const COPY4: &str = r#"
.visible .entry copy4(
	.param .u64 p_out,
	.param .u64 p_in
)
{
	.reg .b32 %r<8>;
	.reg .f32 %f<4>;
	.reg .b64 %rd<8>;
	ld.param.u64 %rd0, [p_out];
	ld.param.u64 %rd1, [p_in];
	mov.u32 %r0, %tid.x;
	mul.wide.u32 %rd2, %r0, 16;
	add.u64 %rd3, %rd1, %rd2;
	ld.global.v4.f32 {%f0, %f1, %f2, %f3}, [%rd3];
	add.u64 %rd4, %rd0, %rd2;
	st.global.v4.f32 [%rd4], {%f0, %f1, %f2, %f3};
	ret;
}
"#;

#[test]
fn vector_v4_f32_load_takes_16_sectors_per_request() {
    let d = driver(COPY4);
    let inp = d.upload(&[3.0; 256]).unwrap();
    let out = d.alloc_zeroed(256).unwrap();
    let c = profile_on(&d, "copy4", 1, 64, &[ptr(&out), ptr(&inp)]);
    let g = &c.global;
    assert_eq!((g.load_requests, g.load_sectors), (2, 2 * 16));
    assert_eq!((g.store_requests, g.store_sectors), (2, 2 * 16));
    assert_eq!(g.l2_bytes(), 2 * 1024);
    assert_eq!(c.warp_inst.get(Class::LdGlobal), 2);
    assert_eq!(c.thread_inst.get(Class::LdGlobal), 64);
}

// ---- shared memory

/// Each thread writes `sm[tid * stride]` (words), a barrier, then reads it back.
const BANKS: &str = r#"
.visible .entry banks(
	.param .u64 p_out,
	.param .u32 p_stride
)
{
	.reg .b32 %r<8>;
	.reg .f32 %f<2>;
	.reg .b64 %rd<4>;
	.shared .align 16 .b8 sm[16384];
	ld.param.u64 %rd0, [p_out];
	ld.param.u32 %r0, [p_stride];
	mov.u32 %r1, %tid.x;
	mul.lo.u32 %r2, %r1, %r0;
	shl.b32 %r2, %r2, 2;
	mov.u32 %r3, sm;
	add.u32 %r3, %r3, %r2;
	cvt.rn.f32.u32 %f0, %r1;
	st.shared.f32 [%r3], %f0;
	bar.sync 0;
	ld.shared.f32 %f1, [%r3];
	mul.wide.u32 %rd1, %r1, 4;
	add.u64 %rd2, %rd0, %rd1;
	st.global.f32 [%rd2], %f1;
	ret;
}
"#;

fn run_banks(stride: u32, block: u32) -> Counters {
    let d = driver(BANKS);
    let out = d.alloc_zeroed(block as usize).unwrap();
    let c = profile_on(&d, "banks", 1, block, &[ptr(&out), Param::U32(stride)]);
    let back = d.download(&out, block as usize).unwrap();
    assert!(back.iter().enumerate().all(|(i, &v)| v == i as f32));
    c
}

#[test]
fn thirty_two_way_bank_conflict_takes_32_wavefronts() {
    let c = run_banks(32, 32);
    let s = &c.shared;
    assert_eq!((s.store_requests, s.store_wavefronts), (1, 32));
    assert_eq!((s.load_requests, s.load_wavefronts), (1, 32));
    assert_eq!(s.ideal_wavefronts, 2);
    assert_eq!(s.excess_wavefronts(), 62);
    assert_eq!(s.conflict_degree(), 32.0);
    assert_eq!(c.warp_inst.get(Class::Barrier), 1);
    assert_eq!(c.warp_inst.get(Class::LdShared), 1);
    assert_eq!(c.warp_inst.get(Class::StShared), 1);
    assert_eq!(c.warp_inst.get(Class::Convert), 1);
}

#[test]
fn conflict_free_strides_take_one_wavefront_and_stride_2_takes_two() {
    for (stride, wavefronts) in [(1, 1), (33, 1), (2, 2), (4, 4), (16, 16)] {
        // two warps: each makes its own requests
        let c = run_banks(stride, 64);
        let s = &c.shared;
        assert_eq!(
            (
                s.store_requests,
                s.store_wavefronts,
                s.load_requests,
                s.load_wavefronts
            ),
            (2, 2 * wavefronts, 2, 2 * wavefronts),
            "stride {stride}"
        );
        assert_eq!(s.ideal_wavefronts, 4, "stride {stride}");
        assert_eq!(s.conflict_degree(), wavefronts as f64, "stride {stride}");
    }
}

/// Thread 0 writes `sm[0..4]` (a guarded `.v4` store); after a barrier every thread reads
/// word `tid / div` as a scalar, then `sm[0..4]` as one `.v4` (the same 16 bytes each).
const BROADCAST: &str = r#"
.visible .entry broadcast(
	.param .u64 p_out,
	.param .u32 p_div
)
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	.reg .f32 %f<8>;
	.reg .b64 %rd<4>;
	.shared .align 16 .b8 sm[256];
	ld.param.u64 %rd0, [p_out];
	ld.param.u32 %r0, [p_div];
	mov.u32 %r1, %tid.x;
	setp.lt.u32 %p0, %r1, 1;
	mov.f32 %f0, 0f3F800000;
	@%p0 st.shared.v4.f32 [sm], {%f0, %f0, %f0, %f0};
	bar.sync 0;
	div.u32 %r2, %r1, %r0;
	shl.b32 %r2, %r2, 2;
	mov.u32 %r3, sm;
	add.u32 %r3, %r3, %r2;
	ld.shared.f32 %f1, [%r3];
	ld.shared.v4.f32 {%f2, %f3, %f4, %f5}, [sm];
	add.f32 %f1, %f1, %f2;
	mul.wide.u32 %rd1, %r1, 4;
	add.u64 %rd2, %rd0, %rd1;
	st.global.f32 [%rd2], %f1;
	ret;
}
"#;

#[test]
fn broadcast_reads_take_one_wavefront_per_phase() {
    // div 32: every lane reads word 0; div 8: lanes 8w..8w+7 share word w (4 words, 4 banks)
    for div in [32, 8] {
        let d = driver(BROADCAST);
        let out = d.alloc_zeroed(32).unwrap();
        let c = profile_on(&d, "broadcast", 1, 32, &[ptr(&out), Param::U32(div)]);
        let s = &c.shared;
        // the guarded store: one request of one lane, 16 bytes in one phase
        assert_eq!((s.store_requests, s.store_wavefronts), (1, 1), "div {div}");
        // the scalar read (1 wavefront) and the v4 read: 4 phases of 8 lanes, 1 wavefront each
        assert_eq!(
            (s.load_requests, s.load_wavefronts),
            (2, 1 + 4),
            "div {div}"
        );
        assert_eq!(s.ideal_wavefronts, 1 + 1 + 4);
        assert_eq!(c.warp_inst.get(Class::StShared), 1);
        assert_eq!(c.thread_inst.get(Class::StShared), 1);
        assert_eq!(c.flops, 32);
        assert_eq!(d.download(&out, 32).unwrap(), vec![2.0; 32]);
    }
}

/// Each thread writes and reads back its own `.v2` or `.v4` slot: conflict-free, 2 or 4
/// phases; with a doubled pitch, each phase has a 2-way conflict.
const VEC_SHARED: &str = r#"
.visible .entry vec_shared(
	.param .u64 p_out,
	.param .u32 p_pitch
)
{
	.reg .b32 %r<8>;
	.reg .f32 %f<8>;
	.reg .b64 %rd<4>;
	.shared .align 16 .b8 sm[2048];
	ld.param.u64 %rd0, [p_out];
	ld.param.u32 %r0, [p_pitch];
	mov.u32 %r1, %tid.x;
	mul.lo.u32 %r2, %r1, %r0;
	mov.u32 %r3, sm;
	add.u32 %r3, %r3, %r2;
	mov.f32 %f0, 0f40000000;
	st.shared.VEC [%r3], STORED;
	bar.sync 0;
	ld.shared.VEC LOADED, [%r3];
	mul.wide.u32 %rd1, %r1, 4;
	add.u64 %rd2, %rd0, %rd1;
	st.global.f32 [%rd2], %f0;
	ret;
}
"#;

#[test]
fn vector_shared_accesses_are_served_in_phases() {
    let v2 = ("v2.f32", "{%f0, %f0}", "{%f1, %f2}");
    let v4 = ("v4.f32", "{%f0, %f0, %f0, %f0}", "{%f1, %f2, %f3, %f4}");
    // (vector, pitch in bytes, wavefronts per request, ideal per request)
    for ((vec, stored, loaded), pitch, wf, ideal) in [
        (v2, 8, 2, 2),
        (v2, 16, 4, 2),
        (v4, 16, 4, 4),
        (v4, 32, 8, 4),
    ] {
        let src = VEC_SHARED
            .replace("VEC", vec)
            .replace("STORED", stored)
            .replace("LOADED", loaded);
        let d = driver(&src);
        let out = d.alloc_zeroed(32).unwrap();
        let c = profile_on(&d, "vec_shared", 1, 32, &[ptr(&out), Param::U32(pitch)]);
        let s = &c.shared;
        let what = format!("{vec} pitch {pitch}");
        assert_eq!((s.store_requests, s.store_wavefronts), (1, wf), "{what}");
        assert_eq!((s.load_requests, s.load_wavefronts), (1, wf), "{what}");
        assert_eq!(s.ideal_wavefronts, 2 * ideal, "{what}");
    }
}

// ---- instructions and FLOPs

/// Ten iterations of two FMAs per thread, `out[tid]` the result.
const FMA_LOOP: &str = r#"
.visible .entry fma_loop(
	.param .u64 p_out,
	.param .u32 p_trips
)
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	.reg .f32 %f<4>;
	.reg .b64 %rd<4>;
	ld.param.u64 %rd0, [p_out];
	ld.param.u32 %r1, [p_trips];
	mov.u32 %r0, 0;
	mov.f32 %f0, 0f3F800000;
	mov.f32 %f1, 0f3F000000;
LOOP:
	fma.rn.f32 %f0, %f0, %f1, %f1;
	fma.rn.f32 %f0, %f0, %f1, %f1;
	add.u32 %r0, %r0, 1;
	setp.lt.u32 %p0, %r0, %r1;
	@%p0 bra LOOP;
	mov.u32 %r2, %tid.x;
	mul.wide.u32 %rd1, %r2, 4;
	add.u64 %rd2, %rd0, %rd1;
	st.global.f32 [%rd2], %f0;
	ret;
}
"#;

#[test]
fn fma_loop_counts_its_fmas_and_flops() {
    let d = driver(FMA_LOOP);
    let out = d.alloc_zeroed(64).unwrap();
    let c = profile_on(&d, "fma_loop", 1, 64, &[ptr(&out), Param::U32(10)]);
    // 2 warps x 10 iterations x 2 FMAs
    assert_eq!(c.warp_inst.get(Class::Fp32Fma), 40);
    assert_eq!(c.thread_inst.get(Class::Fp32Fma), 64 * 20);
    assert_eq!(c.flops, 64 * 20 * 2);
    // the loop branch is reached 10 times and taken 9 times, then one ret
    assert_eq!(c.warp_inst.get(Class::Control), 2 * 11);
    assert_eq!(c.thread_inst.get(Class::Control), 64 * 10);
    // add + setp per iteration, then mul.wide + add.u64
    assert_eq!(c.warp_inst.get(Class::Integer), 2 * (20 + 2));
    assert_eq!(c.warp_inst.get(Class::Move), 2 * 4);
    assert_eq!(c.warp_inst.get(Class::LdParam), 2 * 2);
    assert_eq!(c.warp_inst.total(), 2 * (2 + 4 + 20 + 22 + 11 + 1));
    assert_eq!(c.global.store_requests, 2);
}

#[test]
fn fma_loop_with_trips_per_lane_runs_as_long_as_its_longest_lane() {
    // trips = lane + 1: the warp issues 32 iterations, its threads execute 1 + 2 + ... + 32
    let src = FMA_LOOP.replace(
        "ld.param.u32 %r1, [p_trips];",
        "mov.u32 %r1, %laneid;\n\tadd.u32 %r1, %r1, 1;",
    );
    let d = driver(&src);
    let out = d.alloc_zeroed(32).unwrap();
    let c = profile_on(&d, "fma_loop", 1, 32, &[ptr(&out), Param::U32(0)]);
    assert_eq!(c.warp_inst.get(Class::Fp32Fma), 32 * 2);
    assert_eq!(c.thread_inst.get(Class::Fp32Fma), 528 * 2);
    assert_eq!(c.flops, 528 * 2 * 2);
    assert_eq!(c.warp_inst.get(Class::Control), 32 + 1);
}

/// Lanes below `p_split` (of the CTA) take one path of two `add.f32`, the others a path of
/// one `mul.f32`; both meet at `ret`.
const DIVERGE: &str = r#"
.visible .entry diverge(
	.param .u64 p_out,
	.param .u32 p_split
)
{
	.reg .pred %p<2>;
	.reg .b32 %r<4>;
	.reg .f32 %f<2>;
	.reg .b64 %rd<4>;
	ld.param.u64 %rd0, [p_out];
	ld.param.u32 %r1, [p_split];
	mov.u32 %r0, %tid.x;
	mov.f32 %f0, 0f3FC00000;
	setp.lt.u32 %p0, %r0, %r1;
	@%p0 bra THEN;
	mul.f32 %f0, %f0, %f0;
	bra.uni END;
THEN:
	add.f32 %f0, %f0, %f0;
	add.f32 %f0, %f0, %f0;
END:
	mul.wide.u32 %rd1, %r0, 4;
	add.u64 %rd2, %rd0, %rd1;
	st.global.f32 [%rd2], %f0;
	ret;
}
"#;

#[test]
fn divergent_branch_counts_each_path_once_per_warp_that_takes_it() {
    let d = driver(DIVERGE);
    let out = d.alloc_zeroed(64).unwrap();
    // warp 0: lanes 0..15 THEN, 16..31 else; warp 1: all else
    let c = profile_on(&d, "diverge", 1, 64, &[ptr(&out), Param::U32(16)]);
    assert_eq!(c.warp_inst.get(Class::Fp32Add), 2);
    assert_eq!(c.warp_inst.get(Class::Fp32Mul), 2);
    assert_eq!(c.thread_inst.get(Class::Fp32Add), 16 * 2);
    assert_eq!(c.thread_inst.get(Class::Fp32Mul), 48);
    assert_eq!(c.flops, 32 + 48);
    // per warp: @p bra, bra.uni, ret
    assert_eq!(c.warp_inst.get(Class::Control), 6);
    // taken by 16 threads, bra.uni by 48, ret by 64
    assert_eq!(c.thread_inst.get(Class::Control), 16 + 48 + 64);
    // the paths rejoin: one store request per warp
    assert_eq!(c.global.store_requests, 2);
    assert_eq!(c.warp_inst.get(Class::StGlobal), 2);
    let y = d.download(&out, 64).unwrap();
    assert!(y[..16].iter().all(|&v| v == 6.0) && y[16..].iter().all(|&v| v == 2.25));

    // uniform: every lane takes THEN, the else path is never issued
    let c = profile_on(&d, "diverge", 1, 64, &[ptr(&out), Param::U32(64)]);
    assert_eq!(c.warp_inst.get(Class::Fp32Add), 4);
    assert_eq!(c.warp_inst.get(Class::Fp32Mul), 0);
    assert_eq!(c.warp_inst.get(Class::Control), 4);
}

/// A warp sum by five butterfly shuffles; lane 0 of each warp stores it.
const WARP_SUM: &str = r#"
.visible .entry warp_sum(
	.param .u64 p_out
)
{
	.reg .pred %p<2>;
	.reg .b32 %r<4>;
	.reg .f32 %f<4>;
	.reg .b64 %rd<4>;
	ld.param.u64 %rd0, [p_out];
	mov.u32 %r0, %tid.x;
	cvt.rn.f32.u32 %f0, %r0;
	shfl.sync.bfly.b32 %f1, %f0, 16, 31, -1;
	add.f32 %f0, %f0, %f1;
	shfl.sync.bfly.b32 %f1, %f0, 8, 31, -1;
	add.f32 %f0, %f0, %f1;
	shfl.sync.bfly.b32 %f1, %f0, 4, 31, -1;
	add.f32 %f0, %f0, %f1;
	shfl.sync.bfly.b32 %f1, %f0, 2, 31, -1;
	add.f32 %f0, %f0, %f1;
	shfl.sync.bfly.b32 %f1, %f0, 1, 31, -1;
	add.f32 %f0, %f0, %f1;
	mov.u32 %r1, %laneid;
	setp.ne.u32 %p0, %r1, 0;
	@%p0 bra DONE;
	shr.u32 %r2, %r0, 5;
	mul.wide.u32 %rd1, %r2, 4;
	add.u64 %rd2, %rd0, %rd1;
	st.global.f32 [%rd2], %f0;
DONE:
	ret;
}
"#;

#[test]
fn warp_shuffles_count_once_per_warp() {
    let d = driver(WARP_SUM);
    let out = d.alloc_zeroed(2).unwrap();
    let c = profile_on(&d, "warp_sum", 1, 64, &[ptr(&out)]);
    assert_eq!(d.download(&out, 2).unwrap(), vec![496.0, 1520.0]);
    assert_eq!(c.warp_inst.get(Class::Warp), 2 * 5);
    assert_eq!(c.thread_inst.get(Class::Warp), 64 * 5);
    assert_eq!(c.warp_inst.get(Class::Fp32Add), 2 * 5);
    assert_eq!(c.flops, 64 * 5);
    // one lane per warp stores: one request of one sector each
    assert_eq!((c.global.store_requests, c.global.store_sectors), (2, 2));
    assert_eq!(c.thread_inst.get(Class::StGlobal), 2);
}

// ---- the switch and the log

#[test]
fn counting_is_off_by_default_and_counters_sum_over_launches() {
    let d = driver(COPY4);
    let inp = d.upload(&[1.0; 128]).unwrap();
    let out = d.alloc_zeroed(128).unwrap();
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        shared_bytes: 0,
    };
    let prof = d.profiler();
    assert!(!prof.enabled());
    d.launch("m", "copy4", cfg, &[ptr(&out), ptr(&inp)])
        .unwrap();
    assert!(prof.take().is_empty(), "plain launches are not logged");
    prof.set_enabled(true);
    for _ in 0..2 {
        d.launch("m", "copy4", cfg, &[ptr(&out), ptr(&inp)])
            .unwrap();
    }
    prof.set_enabled(false);
    d.launch("m", "copy4", cfg, &[ptr(&out), ptr(&inp)])
        .unwrap();
    let log = prof.take();
    assert_eq!(log.len(), 2);
    let mut sum = Counters::default();
    for p in &log {
        sum += &p.counters;
    }
    assert_eq!((sum.global.load_requests, sum.global.load_sectors), (2, 32));
    let json = serde_json::to_value(&log[0]).unwrap();
    assert_eq!(json["counters"]["global"]["load_sectors"], 16);
    assert_eq!(json["counters"]["warp_inst"]["ld_global"], 1);
    assert_eq!(json["kernel"], "copy4");
}

// ---- a kernel of kernels/ through the backend

#[test]
fn adamw_step_moves_seven_f32_passes_between_the_sms_and_l2() {
    use bella::backend::AdamW;
    let (be, prof) = bella::backend::ptx_sim::open_profiled().unwrap();
    let n = 40_000;
    let data: Vec<f32> = (0..n).map(|i| (i % 17) as f32 / 16.0 - 0.5).collect();
    let mut param = be.upload(&[n], &data).unwrap();
    let grad = be.upload(&[n], &data).unwrap();
    let mut m = be.zeros(&[n]).unwrap();
    let mut v = be.zeros(&[n]).unwrap();
    prof.take(); // the uploads launch nothing, but start from an empty log
    let hp = AdamW {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        step: 1,
    };
    be.adamw_step(&mut param, &grad, &mut m, &mut v, &hp)
        .unwrap();
    let log = prof.take();
    assert!(!log.is_empty(), "the step launched a kernel");
    let mut total = Counters::default();
    for p in &log {
        total += &p.counters;
    }
    // read param, grad, m, v; write param, m, v
    let passes = 7 * 4 * n as u64;
    let l2 = total.global.l2_bytes();
    assert!(
        l2.abs_diff(passes) * 50 <= passes,
        "l2 bytes {l2} against 7 passes of {passes}: {log:#?}"
    );
}

// ---- the DRAM footprint and sampled launches

#[test]
fn dram_counts_each_distinct_sector_of_a_launch_once() {
    // Stride 0: all 256 threads of 4 CTAs read in[0]; each warp's request is 1 sector, but
    // the launch touches one sector of `in` and 32 of `out` (256 floats).
    let c = run_copy(256, 0, 4, 64);
    let g = &c.global;
    assert_eq!((g.load_requests, g.load_sectors), (8, 8));
    assert_eq!((g.dram_load_sectors, g.dram_store_sectors), (1, 32));
    assert_eq!(g.dram_bytes(), 33 * 32);
    // A coalesced copy moves each sector once either way.
    let c = run_copy(256, 1, 4, 64);
    assert_eq!(c.global.dram_load_sectors, c.global.load_sectors);
    assert_eq!(c.global.dram_store_sectors, c.global.store_sectors);
}

#[test]
fn a_sampled_launch_runs_a_strided_subset_and_scales_to_the_grid() {
    let (grid, block) = (100u32, 64u32);
    let full = run_copy(grid * block, 1, grid, block);
    let d = driver(COPY);
    let n = (grid * block) as usize;
    let inp = d.upload(&vec![1.5; n]).unwrap();
    let out = d.alloc_zeroed(n).unwrap();
    let prof = d.profiler();
    prof.set_enabled(true);
    prof.set_max_ctas(Some(10));
    let cfg = LaunchConfig {
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        shared_bytes: 0,
    };
    let params = [ptr(&out), ptr(&inp), Param::U32(n as u32), Param::U32(1)];
    d.launch("m", "copy", cfg, &params).unwrap();
    let p = prof.take().pop().unwrap();
    let sample = p.sample.expect("the launch was sampled");
    assert_eq!((sample.ctas_run, sample.ctas_total), (10, 100));
    // Every CTA does the same work here, so the scaled counts are the full run's exactly.
    assert_eq!(p.counters, full);
    // Only the sampled CTAs wrote: CTAs 0, 10, 20, ...
    let written = d.download(&out, n).unwrap();
    let ran: Vec<usize> = (0..grid as usize)
        .filter(|&b| written[b * block as usize] != 0.0)
        .collect();
    assert_eq!(ran, (0..100).step_by(10).collect::<Vec<_>>());
}
