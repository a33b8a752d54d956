// Casts between f32 and the 16-bit floats bf16 and f16 (src/dtype.rs: the storage and the
// one rounding rule). The entry names are those of the PTX cast kernels; the host side is
// src/backend/wgpu/cast.rs.
//
// Layout: an f32 tensor of n elements is n words; a bf16/f16 tensor is ceil(n / 2) u32
// words, element 2i in the low 16 bits of word i and 2i + 1 in the high 16 bits (an odd n
// leaves the last word's high half 0). One invocation per packed word: a narrowing cast
// reads two f32 and writes one word, a widening cast reads one word and writes two f32.
//
// Rounding (f32 -> bf16 / f16): to nearest, ties to even, bit for bit as the `half`
// crate's from_f32 (`DType::round_bits`): subnormal results kept, overflow to ±inf, every
// NaN to the canonical 0x7fff. Widening is exact.
//
// Everything is integer arithmetic on the f32 bits: every buffer is array<u32> and no
// value passes through an f32 register. WGSL lets an implementation flush f32 subnormals in
// float operations (and a load or store through an f32 variable may canonicalize a NaN), so
// an f32 subnormal input of a narrowing cast, or a widened f16 subnormal, would not survive
// a float path bit for bit. pack2x16float / unpack2x16float are not used either: WGSL
// leaves their rounding (and subnormal handling) to the implementation, and `enable f16;`
// is not portable.
//
// Dispatch: a grid-stride loop over the words. The invocation numbered
// (wid.x + wid.y * nwg.x) * 256 + li starts at that word and strides by the number of
// invocations dispatched (nwg.x * nwg.y * 256), so any workgroup count, folded into (x, y)
// in any way, covers every word exactly once; the host dispatches ceil(words / 256)
// workgroups folded as every other kernel (then each invocation does at most one word, and
// those past the end do nothing). The loop bound comes from the parameters, so they are
// read from a read-only storage buffer, not a uniform one: Mesa's lavapipe may recompile a
// kernel with the uniform values that steer its loops folded in on every dispatch, and
// leak each variant (see src/backend/wgpu/kernels.rs).
//
// Portable WGSL (no extensions).

struct CastParams {
    // Elements (not words).
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const THREADS: u32 = 256u;
// The canonical NaN of both 16-bit formats (what CUDA's conversions return).
const HALF_NAN: u32 = 0x7fffu;

@group(0) @binding(0) var<storage, read> cp: CastParams;
// Narrowing: src = the f32 bits (n words), dst = the packed halves (ceil(n / 2) words).
// Widening: src = the packed halves, dst = the f32 bits.
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// ceil(n / 2) without overflow.
fn word_count() -> u32 {
    return cp.n / 2u + (cp.n & 1u);
}

fn first_word(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * THREADS + li;
}

fn grid_stride(nwg: vec3<u32>) -> u32 {
    return nwg.x * nwg.y * THREADS;
}

// Whether dropping the bits below the kept LSB rounds the magnitude up, to nearest with
// ties to even. `rb` is the round bit (the highest dropped bit); 3 rb - 1 masks the kept
// LSB (2 rb) and the sticky bits below rb. Round up when the round bit is set and either
// some sticky bit is set (above the half-way point) or the LSB is odd (a tie, to even).
fn round_up(bits: u32, rb: u32) -> bool {
    return (bits & rb) != 0u && (bits & (3u * rb - 1u)) != 0u;
}

// f32 bits -> bf16 bits. bf16 is the top half of an f32: round the low 16 bits off. A carry
// out of the mantissa bumps the exponent (correct), and past the largest finite value it
// gives ±inf (0x7f80 / 0xff80), as it should; ±inf stays ±inf (its low bits are 0).
fn bf16_bits(x: u32) -> u32 {
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return HALF_NAN;
    }
    return (x >> 16u) + select(0u, 1u, round_up(x, 0x8000u));
}

// f32 bits -> f16 bits. With e the f32 biased exponent, the f16 biased exponent is e - 112.
fn f16_bits(x: u32) -> u32 {
    let sign = (x >> 16u) & 0x8000u;
    let e = (x >> 23u) & 0xffu;
    let man = x & 0x7fffffu;
    if (e == 0xffu) {
        // inf -> inf; NaN -> the canonical NaN (whatever its sign and payload).
        if (man != 0u) {
            return HALF_NAN;
        }
        return sign | 0x7c00u;
    }
    if (e >= 143u) {
        // |x| >= 2^16: past the f16 exponent range, ±inf.
        return sign | 0x7c00u;
    }
    if (e <= 112u) {
        // |x| < 2^-14: an f16 subnormal (or ±0). With the implicit bit, the 24-bit
        // significand m shifts right by 126 - e (14 at e = 112 ... 24 at e = 102) to give
        // the subnormal mantissa in units of 2^-24. Below 2^-25 (e < 102) everything is
        // shifted out and the round bit is 0: ±0 (f32 subnormals and zeros land here too).
        if (e < 102u) {
            return sign;
        }
        let m = man | 0x800000u;
        let s = 126u - e;
        // A round-up of 0x3ff carries into 0x400, the smallest normal: correct.
        return sign | ((m >> s) + select(0u, 1u, round_up(m, 1u << (s - 1u))));
    }
    // A normal f16: keep the top 10 mantissa bits, round the 13 below. A carry out of the
    // mantissa bumps the exponent; out of exponent 30 it gives 0x7c00 = inf (|x| >= 65520).
    let r = sign | ((e - 112u) << 10u) | (man >> 13u);
    return r + select(0u, 1u, round_up(man, 0x1000u));
}

// f16 bits (low 16 of h) -> f32 bits, exactly.
fn f16_to_f32_bits(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0x1fu) {
        // inf, or a NaN (kept quiet, its payload shifted into place).
        if (m == 0u) {
            return sign | 0x7f800000u;
        }
        return sign | 0x7fc00000u | (m << 13u);
    }
    if (e == 0u) {
        if (m == 0u) {
            return sign;
        }
        // A subnormal m * 2^-24 with its top bit at p (0..9) is 1.f * 2^(p - 24): f32
        // exponent p - 24 + 127, the bits below the top one moved up to the mantissa's top.
        let p = 31u - countLeadingZeros(m);
        return sign | ((p + 103u) << 23u) | ((m << (23u - p)) & 0x7fffffu);
    }
    return sign | ((e + 112u) << 23u) | (m << 13u);
}

@compute @workgroup_size(256)
fn cast_f32_to_bf16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let words = word_count();
    let step = grid_stride(nwg);
    for (var i = first_word(wid, nwg, li); i < words; i = i + step) {
        let lo = bf16_bits(src[2u * i]);
        var hi = 0u;
        if (2u * i + 1u < cp.n) {
            hi = bf16_bits(src[2u * i + 1u]);
        }
        dst[i] = lo | (hi << 16u);
    }
}

@compute @workgroup_size(256)
fn cast_f32_to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let words = word_count();
    let step = grid_stride(nwg);
    for (var i = first_word(wid, nwg, li); i < words; i = i + step) {
        let lo = f16_bits(src[2u * i]);
        var hi = 0u;
        if (2u * i + 1u < cp.n) {
            hi = f16_bits(src[2u * i + 1u]);
        }
        dst[i] = lo | (hi << 16u);
    }
}

// bf16 -> f32 is the bits moved to the top half (exact; a bf16 NaN stays a NaN).
@compute @workgroup_size(256)
fn cast_bf16_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let words = word_count();
    let step = grid_stride(nwg);
    for (var i = first_word(wid, nwg, li); i < words; i = i + step) {
        let w = src[i];
        dst[2u * i] = w << 16u;
        if (2u * i + 1u < cp.n) {
            dst[2u * i + 1u] = w & 0xffff0000u;
        }
    }
}

@compute @workgroup_size(256)
fn cast_f16_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let words = word_count();
    let step = grid_stride(nwg);
    for (var i = first_word(wid, nwg, li); i < words; i = i + step) {
        let w = src[i];
        dst[2u * i] = f16_to_f32_bits(w & 0xffffu);
        if (2u * i + 1u < cp.n) {
            dst[2u * i + 1u] = f16_to_f32_bits(w >> 16u);
        }
    }
}
