//! Planted kernel bugs are caught by the PTX simulator. Each test runs a small kernel written
//! in the style of `kernels/` (grid-stride loops, shared-memory tiles and trees, warp
//! shuffles), first as written (it must compute the right values and pass every check), then
//! with one bug planted by a text substitution: the run must fail with an error naming the
//! kernel, the PTX line, the thread and the address. Driven through the `Driver` surface.
#![cfg(feature = "ptx-sim")]

use bella::backend::ptx::driver::{Driver, LaunchConfig, Param};
use bella::backend::ptx_sim::{SimBuf, SimDriver};

/// `src` with `from` replaced by `to` exactly once (so a planted bug cannot silently vanish).
fn plant(src: &str, from: &str, to: &str) -> String {
    assert_eq!(src.matches(from).count(), 1, "`{from}` must occur once");
    src.replacen(from, to, 1)
}

/// The 1-based line of the only line containing `needle`.
fn line_of(src: &str, needle: &str) -> usize {
    let hits: Vec<usize> = src
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "`{needle}` must be on one line");
    hits[0]
}

fn driver(src: &str) -> SimDriver {
    let d = SimDriver::new();
    d.load_module("m", src).expect("the kernel parses");
    d
}

fn cfg(grid: [u32; 3], block: [u32; 3]) -> LaunchConfig {
    LaunchConfig {
        grid,
        block,
        shared_bytes: 0,
    }
}

fn ptr(buf: &SimBuf) -> Param<'_, SimBuf> {
    Param::Ptr {
        buf,
        byte_offset: 0,
    }
}

fn assert_mentions(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error lacks `{p}`:\n{err}");
    }
}

fn data(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0)
        .collect()
}

// ---- an elementwise grid-stride loop: off-by-one bound

const SCALE: &str = r#"
.version 7.8
.target sm_80
.address_size 64
.visible .entry scale(
	.param .u64 p_out,
	.param .u64 p_in,
	.param .u32 p_n,
	.param .f32 p_alpha
)
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	.reg .f32 %f<4>;
	.reg .b64 %rd<8>;
	ld.param.u64 %rd0, [p_out];
	cvta.to.global.u64 %rd0, %rd0;
	ld.param.u64 %rd1, [p_in];
	cvta.to.global.u64 %rd1, %rd1;
	ld.param.u32 %r0, [p_n];
	ld.param.f32 %f0, [p_alpha];
	mov.u32 %r1, %ctaid.x;
	mov.u32 %r2, %ntid.x;
	mov.u32 %r3, %tid.x;
	mad.lo.u32 %r4, %r1, %r2, %r3;
	mov.u32 %r5, %nctaid.x;
	mul.lo.u32 %r5, %r5, %r2;
LOOP:
	setp.ge.u32 %p0, %r4, %r0;
	@%p0 bra DONE;
	mul.wide.u32 %rd2, %r4, 4;
	add.u64 %rd3, %rd1, %rd2;
	ld.global.f32 %f1, [%rd3];
	mul.f32 %f1, %f1, %f0;
	add.u64 %rd4, %rd0, %rd2;
	st.global.f32 [%rd4], %f1;
	add.u32 %r4, %r4, %r5;
	bra.uni LOOP;
DONE:
	ret;
}
"#;

fn run_scale(src: &str, n: usize) -> (Result<Vec<f32>, String>, u64) {
    let d = driver(src);
    let x = data(n);
    let inp = d.upload(&x).unwrap();
    let out = d.alloc_zeroed(n).unwrap();
    let params = [ptr(&out), ptr(&inp), Param::U32(n as u32), Param::F32(-2.0)];
    let r = d
        .launch("m", "scale", cfg([4, 1, 1], [128, 1, 1]), &params)
        .map(|_| d.download(&out, n).unwrap())
        .map_err(|e| e.to_string());
    (r, inp.address())
}

#[test]
fn off_by_one_bound_reads_past_the_end() {
    let n = 1000;
    let (ok, _) = run_scale(SCALE, n);
    let want: Vec<f32> = data(n).iter().map(|x| -2.0 * x).collect();
    assert_eq!(ok.unwrap(), want);

    let bad = plant(
        SCALE,
        "setp.ge.u32 %p0, %r4, %r0;",
        "setp.gt.u32 %p0, %r4, %r0;",
    );
    let (err, base) = run_scale(&bad, n);
    let err = err.unwrap_err();
    // element n = 1000 is reached by global thread 1000 - 512 = 488: CTA 3, thread 104
    let line = line_of(&bad, "ld.global.f32 %f1, [%rd3];");
    assert_mentions(
        &err,
        &[
            "kernel `scale`",
            &format!("line {line} `ld.global.f32 %f1, [%rd3];`"),
            "thread (104,0,0) of CTA (3,0,0)",
            "out-of-bounds global read",
            &format!("at {:#x}", base + 4 * n as u64),
            "parameter `p_in`",
        ],
    );
}

// ---- a shared-memory tree reduction: missing bar.sync, wrong shared offset

const BLOCK_SUM: &str = r#"
.version 7.8
.target sm_80
.address_size 64
.visible .entry block_sum(
	.param .u64 p_out,
	.param .u64 p_in,
	.param .u32 p_n
)
.maxntid 256, 1, 1
{
	.reg .pred %p<4>;
	.reg .b32 %r<12>;
	.reg .f32 %f<4>;
	.reg .b64 %rd<8>;
	.shared .align 16 .b8 red[1024];
	ld.param.u64 %rd0, [p_out];
	cvta.to.global.u64 %rd0, %rd0;
	ld.param.u64 %rd1, [p_in];
	cvta.to.global.u64 %rd1, %rd1;
	ld.param.u32 %r0, [p_n];
	mov.u32 %r1, %ctaid.x;
	mov.u32 %r2, %tid.x;
	shl.b32 %r3, %r1, 8;
	add.u32 %r3, %r3, %r2;
	mov.f32 %f0, 0f00000000;
	setp.lt.u32 %p0, %r3, %r0;
	mul.wide.u32 %rd2, %r3, 4;
	add.u64 %rd2, %rd1, %rd2;
	@%p0 ld.global.f32 %f0, [%rd2];
	mov.u32 %r4, red;
	shl.b32 %r5, %r2, 2;
	add.u32 %r5, %r4, %r5;
	st.shared.f32 [%r5], %f0;
	bar.sync 0; // loaded
	mov.u32 %r6, 128;
STEP:
	setp.lt.u32 %p1, %r2, %r6;
	@!%p1 bra SKIP;
	shl.b32 %r7, %r6, 2;
	add.u32 %r7, %r5, %r7;
	ld.shared.f32 %f1, [%r5];
	ld.shared.f32 %f2, [%r7];
	add.f32 %f1, %f1, %f2;
	st.shared.f32 [%r5], %f1;
SKIP:
	bar.sync 0; // step done
	shr.u32 %r6, %r6, 1;
	setp.ne.u32 %p2, %r6, 0;
	@%p2 bra.uni STEP;
	setp.ne.u32 %p3, %r2, 0;
	@%p3 bra DONE;
	ld.shared.f32 %f3, [red];
	mul.wide.u32 %rd3, %r1, 4;
	add.u64 %rd3, %rd0, %rd3;
	st.global.f32 [%rd3], %f3;
DONE:
	ret;
}
"#;

fn run_block_sum(src: &str, n: usize) -> Result<Vec<f32>, String> {
    let d = driver(src);
    let x = data(n);
    let inp = d.upload(&x).unwrap();
    let ctas = n.div_ceil(256);
    let out = d.alloc_zeroed(ctas).unwrap();
    let params = [ptr(&out), ptr(&inp), Param::U32(n as u32)];
    d.launch(
        "m",
        "block_sum",
        cfg([ctas as u32, 1, 1], [256, 1, 1]),
        &params,
    )
    .map(|_| d.download(&out, ctas).unwrap())
    .map_err(|e| e.to_string())
}

#[test]
fn block_sum_as_written_is_correct_and_clean() {
    let n = 600; // a partial last block
    let got = run_block_sum(BLOCK_SUM, n).unwrap();
    let x = data(n);
    for (b, g) in got.iter().enumerate() {
        let want: f32 = x[b * 256..((b + 1) * 256).min(n)].iter().sum();
        assert!(
            (g - want).abs() <= 1e-3 * want.abs().max(1.0),
            "block {b}: {g} vs {want}"
        );
    }
}

#[test]
fn missing_barrier_in_a_tree_reduction_is_a_race() {
    let bad = plant(
        BLOCK_SUM,
        "bar.sync 0; // step done",
        "// (barrier removed)",
    );
    let err = run_block_sum(&bad, 600).unwrap_err();
    // thread 0 runs every step alone; its last step read red[1] as the partner, before
    // thread 1 updates red[1] in its first step
    let line = line_of(&bad, "st.shared.f32 [%r5], %f1;");
    assert_mentions(
        &err,
        &[
            "kernel `block_sum`",
            &format!("line {line} `st.shared.f32 [%r5], %f1;`"),
            "thread (1,0,0) of CTA (",
            "shared memory race at 0x4: written after a read by thread (0,0,0)",
        ],
    );
}

#[test]
fn missing_barrier_after_the_loads_is_an_uninitialised_read() {
    let bad = plant(BLOCK_SUM, "bar.sync 0; // loaded", "// (barrier removed)");
    let err = run_block_sum(&bad, 600).unwrap_err();
    // thread 0 adds red[128] before thread 128 stored it
    let line = line_of(&bad, "ld.shared.f32 %f2, [%r7];");
    assert_mentions(
        &err,
        &[
            "kernel `block_sum`",
            &format!("line {line} `ld.shared.f32 %f2, [%r7];`"),
            "thread (0,0,0) of CTA (",
            "uninitialised shared memory at 0x200",
        ],
    );
}

#[test]
fn wrong_shared_offset_in_a_tree_reduction_leaves_the_tile() {
    // the partner at tid + s + 1 instead of tid + s: thread 127 reads red[256]
    let bad = plant(
        BLOCK_SUM,
        "add.u32 %r7, %r5, %r7;",
        "add.u32 %r7, %r5, %r7;\n\tadd.u32 %r7, %r7, 4;",
    );
    let err = run_block_sum(&bad, 600).unwrap_err();
    let line = line_of(&bad, "ld.shared.f32 %f2, [%r7];");
    assert_mentions(
        &err,
        &[
            &format!("line {line}"),
            "thread (127,0,0) of CTA (",
            "out-of-bounds shared read of 4 bytes at 0x400",
        ],
    );
}

// ---- a padded shared tile transpose: wrong pitch, missing barrier, off-by-one guard

const TRANSPOSE: &str = r#"
.version 7.8
.target sm_80
.address_size 64
// out [cols, rows] = in [rows, cols] transposed, through a 32 x 33 shared tile (pitch 132 B)
.visible .entry transpose(
	.param .u64 p_out,
	.param .u64 p_in,
	.param .u32 p_rows,
	.param .u32 p_cols
)
{
	.reg .pred %p<4>;
	.reg .b32 %r<16>;
	.reg .f32 %f<2>;
	.reg .b64 %rd<8>;
	.shared .align 4 .b8 tile[4224];
	ld.param.u64 %rd0, [p_out];
	cvta.to.global.u64 %rd0, %rd0;
	ld.param.u64 %rd1, [p_in];
	cvta.to.global.u64 %rd1, %rd1;
	ld.param.u32 %r0, [p_rows];
	ld.param.u32 %r1, [p_cols];
	mov.u32 %r2, %tid.x;
	mov.u32 %r3, %tid.y;
	mov.u32 %r4, %ctaid.x;
	mov.u32 %r5, %ctaid.y;
	mov.u32 %r15, tile;
	// load: x = ctaid.x*32 + tid.x, y = ctaid.y*32 + tid.y
	shl.b32 %r6, %r4, 5;
	add.u32 %r6, %r6, %r2;
	shl.b32 %r7, %r5, 5;
	add.u32 %r7, %r7, %r3;
	setp.lt.u32 %p0, %r6, %r1;
	setp.lt.u32 %p1, %r7, %r0;
	and.pred %p0, %p0, %p1;
	@!%p0 bra LOADED;
	mad.lo.u32 %r8, %r7, %r1, %r6;
	mul.wide.u32 %rd2, %r8, 4;
	add.u64 %rd2, %rd1, %rd2;
	ld.global.f32 %f0, [%rd2];
	shl.b32 %r9, %r2, 2;
	mad.lo.u32 %r9, %r3, 132, %r9;
	add.u32 %r9, %r15, %r9;
	st.shared.f32 [%r9], %f0;
LOADED:
	bar.sync 0;
	// store: ox = ctaid.y*32 + tid.x (a row of in), oy = ctaid.x*32 + tid.y (a column)
	shl.b32 %r10, %r5, 5;
	add.u32 %r10, %r10, %r2;
	shl.b32 %r11, %r4, 5;
	add.u32 %r11, %r11, %r3;
	setp.lt.u32 %p2, %r10, %r0;
	setp.lt.u32 %p3, %r11, %r1;
	and.pred %p2, %p2, %p3;
	@!%p2 bra DONE;
	shl.b32 %r12, %r3, 2;
	mad.lo.u32 %r12, %r2, 132, %r12;
	add.u32 %r12, %r15, %r12;
	ld.shared.f32 %f1, [%r12];
	mad.lo.u32 %r13, %r11, %r0, %r10;
	mul.wide.u32 %rd3, %r13, 4;
	add.u64 %rd3, %rd0, %rd3;
	st.global.f32 [%rd3], %f1;
DONE:
	ret;
}
"#;

const ROWS: usize = 45;
const COLS: usize = 70;

fn run_transpose(src: &str) -> (Result<Vec<f32>, String>, u64) {
    let d = driver(src);
    let inp = d.upload(&data(ROWS * COLS)).unwrap();
    let out = d.alloc_zeroed(ROWS * COLS).unwrap();
    let params = [
        ptr(&out),
        ptr(&inp),
        Param::U32(ROWS as u32),
        Param::U32(COLS as u32),
    ];
    let grid = [COLS.div_ceil(32) as u32, ROWS.div_ceil(32) as u32, 1];
    let r = d
        .launch("m", "transpose", cfg(grid, [32, 32, 1]), &params)
        .map(|_| d.download(&out, ROWS * COLS).unwrap())
        .map_err(|e| e.to_string());
    (r, inp.address())
}

#[test]
fn transpose_as_written_is_correct_on_partial_tiles() {
    let got = run_transpose(TRANSPOSE).0.unwrap();
    let x = data(ROWS * COLS);
    for r in 0..ROWS {
        for c in 0..COLS {
            assert_eq!(got[c * ROWS + r], x[r * COLS + c], "element ({r}, {c})");
        }
    }
}

#[test]
fn wrong_shared_pitch_makes_two_threads_write_one_word() {
    // the store side uses a pitch of 31 floats: thread (31, y) and (0, y+1) collide
    let bad = plant(
        TRANSPOSE,
        "mad.lo.u32 %r9, %r3, 132, %r9;",
        "mad.lo.u32 %r9, %r3, 124, %r9;",
    );
    let err = run_transpose(&bad).0.unwrap_err();
    let line = line_of(&bad, "st.shared.f32 [%r9], %f0;");
    assert_mentions(
        &err,
        &[
            "kernel `transpose`",
            &format!("line {line} `st.shared.f32 [%r9], %f0;`"),
            "thread (0,1,0) of CTA (",
            "shared memory race at 0x7c: written by thread (31,0,0) and by thread (0,1,0)",
        ],
    );
}

#[test]
fn missing_barrier_in_a_transpose_reads_an_unwritten_tile_word() {
    let bad = plant(TRANSPOSE, "\tbar.sync 0;\n", "\n");
    let err = run_transpose(&bad).0.unwrap_err();
    // thread (1,0) reads tile row 1, column 0: thread (0,1) has not stored it yet
    let line = line_of(&bad, "ld.shared.f32 %f1, [%r12];");
    assert_mentions(
        &err,
        &[
            &format!("line {line} `ld.shared.f32 %f1, [%r12];`"),
            "thread (1,0,0) of CTA (",
            "uninitialised shared memory at 0x84",
        ],
    );
}

#[test]
fn off_by_one_guard_in_a_transpose_reads_past_the_matrix() {
    let bad = plant(
        TRANSPOSE,
        "setp.lt.u32 %p0, %r6, %r1;",
        "setp.le.u32 %p0, %r6, %r1;",
    );
    let (err, base) = run_transpose(&bad);
    let err = err.unwrap_err();
    // x = 70 on the last row (y = 44) is element 45 * 70: CTA (2,1), thread (6,12)
    let line = line_of(&bad, "ld.global.f32 %f0, [%rd2];");
    assert_mentions(
        &err,
        &[
            &format!("line {line}"),
            "thread (6,12,0) of CTA (2,1,0)",
            &format!(
                "out-of-bounds global read of 4 bytes at {:#x}",
                base + 4 * (ROWS * COLS) as u64
            ),
        ],
    );
}

// ---- a warp-per-row sum with shuffles: lanes that leave before the shuffle

const ROW_SUM: &str = r#"
.version 7.8
.target sm_80
.address_size 64
// out[row] = sum of in[row, :], one warp per row
.visible .entry row_sum(
	.param .u64 p_out,
	.param .u64 p_in,
	.param .u32 p_rows,
	.param .u32 p_cols
)
{
	.reg .pred %p<4>;
	.reg .b32 %r<12>;
	.reg .f32 %f<4>;
	.reg .b64 %rd<8>;
	ld.param.u64 %rd0, [p_out];
	cvta.to.global.u64 %rd0, %rd0;
	ld.param.u64 %rd1, [p_in];
	cvta.to.global.u64 %rd1, %rd1;
	ld.param.u32 %r0, [p_rows];
	ld.param.u32 %r1, [p_cols];
	mov.u32 %r2, %tid.x;
	and.b32 %r3, %r2, 31;
	mov.u32 %r4, %ctaid.x;
	mov.u32 %r5, %ntid.x;
	mad.lo.u32 %r6, %r4, %r5, %r2;
	shr.u32 %r6, %r6, 5;
	setp.ge.u32 %p0, %r6, %r0;
	@%p0 bra DONE;
	mov.f32 %f0, 0f00000000;
	mov.u32 %r7, %r3;
COLS:
	setp.ge.u32 %p1, %r7, %r1;
	@%p1 bra REDUCE;
	mad.lo.u32 %r8, %r6, %r1, %r7;
	mul.wide.u32 %rd2, %r8, 4;
	add.u64 %rd2, %rd1, %rd2;
	ld.global.f32 %f1, [%rd2];
	add.f32 %f0, %f0, %f1;
	add.u32 %r7, %r7, 32;
	bra COLS;
REDUCE:
	shfl.sync.bfly.b32 %f1, %f0, 16, 31, 0xffffffff;
	add.f32 %f0, %f0, %f1;
	shfl.sync.bfly.b32 %f1, %f0, 8, 31, 0xffffffff;
	add.f32 %f0, %f0, %f1;
	shfl.sync.bfly.b32 %f1, %f0, 4, 31, 0xffffffff;
	add.f32 %f0, %f0, %f1;
	shfl.sync.bfly.b32 %f1, %f0, 2, 31, 0xffffffff;
	add.f32 %f0, %f0, %f1;
	shfl.sync.bfly.b32 %f1, %f0, 1, 31, 0xffffffff;
	add.f32 %f0, %f0, %f1;
	setp.ne.u32 %p2, %r3, 0;
	@%p2 bra DONE;
	mul.wide.u32 %rd3, %r6, 4;
	add.u64 %rd3, %rd0, %rd3;
	st.global.f32 [%rd3], %f0;
DONE:
	ret;
}
"#;

fn run_row_sum(src: &str, rows: usize, cols: usize) -> Result<Vec<f32>, String> {
    let d = driver(src);
    let inp = d.upload(&data(rows * cols)).unwrap();
    let out = d.alloc_zeroed(rows).unwrap();
    let params = [
        ptr(&out),
        ptr(&inp),
        Param::U32(rows as u32),
        Param::U32(cols as u32),
    ];
    let ctas = (rows * 32).div_ceil(128) as u32;
    d.launch("m", "row_sum", cfg([ctas, 1, 1], [128, 1, 1]), &params)
        .map(|_| d.download(&out, rows).unwrap())
        .map_err(|e| e.to_string())
}

#[test]
fn row_sum_as_written_is_correct() {
    let (rows, cols) = (9, 45);
    let got = run_row_sum(ROW_SUM, rows, cols).unwrap();
    let x = data(rows * cols);
    for r in 0..rows {
        let want: f32 = x[r * cols..(r + 1) * cols].iter().sum();
        assert!(
            (got[r] - want).abs() < 1e-4 * want.abs().max(1.0),
            "row {r}: {} vs {want}",
            got[r]
        );
    }
}

#[test]
fn lanes_leaving_before_a_full_warp_shuffle_are_caught() {
    // lanes with no column exit instead of joining the reduction with a zero
    let bad = plant(ROW_SUM, "@%p1 bra REDUCE;", "@%p1 bra LEAVE;");
    let bad = plant(
        &bad,
        "\tbra COLS;\n",
        "\tbra COLS;\nLEAVE:\n\tsetp.eq.u32 %p3, %r7, %r3;\n\t@%p3 bra DONE;\n",
    );
    let err = run_row_sum(&bad, 9, 20).unwrap_err();
    // with 20 columns lanes 20..31 leave; lane 4 reads lane 4^16 = 20
    let line = line_of(&bad, "shfl.sync.bfly.b32 %f1, %f0, 16, 31, 0xffffffff;");
    assert_mentions(
        &err,
        &[
            "kernel `row_sum`",
            &format!("line {line}"),
            "thread (4,0,0) of CTA (",
            "lane 4 reads lane 20, which does not take part",
        ],
    );
}
