/*
 * bella.h - the C ABI of bella (libbella_capi.so / libbella_capi.a, built by
 * `cargo build -p bella-capi`): K LoRA particles on one frozen weight, ensembles and SVGD.
 *
 * Every function returns a BellaStatus: BELLA_OK (0) or an error code, with the message of
 * the last failure on the calling thread from bella_last_error(). No panic crosses the
 * boundary (it is BELLA_ERR_PANIC). Outputs are written through the `*_out` pointers only on
 * success; each tensor handle returned is the caller's, freed with bella_tensor_free().
 * In-place ops (bella_adamw_step, bella_svgd_step) update the tensors they are given. Null
 * handles and pointers are refused with BELLA_ERR_INVALID. Tensors are row-major, owned by
 * the library (or, on cuda, over the caller's device memory), f32, bf16 or f16; the op
 * contracts are the Rust ones (`bella::ops`, DESIGN.md, README "Half precision"): matmul,
 * lora_forward and lora_backward take bf16/f16 operands (one type; outputs f32), the
 * other ops refuse 16-bit tensors (bella_cast them first).
 */
#ifndef BELLA_H
#define BELLA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t BellaStatus;
#define BELLA_OK 0
#define BELLA_ERR_INVALID 1     /* a value or pointer out of range, a missing input */
#define BELLA_ERR_SHAPE 2       /* a tensor of the wrong shape */
#define BELLA_ERR_UNAVAILABLE 3 /* unknown backend, or not built in / not present */
#define BELLA_ERR_DEVICE 4      /* the device refused: launch, memory, limits */
#define BELLA_ERR_NON_FINITE 5  /* NaN or Inf where finite numbers were required */
#define BELLA_ERR_PANIC 6       /* a panic inside the library, caught */
#define BELLA_ERR_OTHER 7

/* Element types. 16-bit tensors travel as bit patterns, one uint16_t per element. */
#define BELLA_F32 0
#define BELLA_BF16 1 /* bfloat16: 1 sign, 8 exponent, 7 mantissa bits */
#define BELLA_F16 2  /* IEEE binary16 (_Float16, NumPy float16) */

typedef struct BellaBackend BellaBackend;
typedef struct BellaTensor BellaTensor;

/* AdamW's hyper-parameters and step (step >= 1). */
typedef struct BellaAdamW {
    float lr;
    float beta1;
    float beta2;
    float eps;
    float weight_decay;
    uint32_t step;
} BellaAdamW;

/* ---- library, backends */
const char *bella_version(void);
const char *bella_last_error(void);
/* "cpu", "wgpu", "cuda", "ptx-sim" (when built in) or "auto". */
BellaStatus bella_backend_open(const char *name, BellaBackend **out);
void bella_backend_free(BellaBackend *be);
BellaStatus bella_synchronize(const BellaBackend *be);

/* ---- tensors */
BellaStatus bella_tensor_upload(const BellaBackend *be, const float *data, const size_t *shape,
                                size_t rank, BellaTensor **out);
BellaStatus bella_tensor_zeros(const BellaBackend *be, const size_t *shape, size_t rank,
                               BellaTensor **out);
/* dtype BELLA_BF16 or BELLA_F16: bits holds numel(shape) bit patterns, kept as they are. */
BellaStatus bella_tensor_upload_bits(const BellaBackend *be, const uint16_t *bits,
                                     const size_t *shape, size_t rank, int32_t dtype,
                                     BellaTensor **out);
/* len must be the tensor's element count; a bf16/f16 tensor is widened (exactly). */
BellaStatus bella_tensor_download(const BellaBackend *be, const BellaTensor *t, float *data,
                                  size_t len);
/* A bf16/f16 tensor's bit patterns; len must be its element count (f32 is refused). */
BellaStatus bella_tensor_download_bits(const BellaBackend *be, const BellaTensor *t,
                                       uint16_t *bits, size_t len);
/* x converted to dtype on the device: to bf16/f16 rounds to nearest, ties to even (NaN to
 * 0x7fff); to f32 is exact. */
BellaStatus bella_cast(const BellaBackend *be, const BellaTensor *x, int32_t dtype,
                       BellaTensor **out);
size_t bella_tensor_rank(const BellaTensor *t);
/* Writes up to cap dimensions; returns the rank. */
size_t bella_tensor_shape(const BellaTensor *t, size_t *shape, size_t cap);
size_t bella_tensor_numel(const BellaTensor *t);
/* BELLA_F32, BELLA_BF16 or BELLA_F16; -1 for a null handle. */
int32_t bella_tensor_dtype(const BellaTensor *t);
void bella_tensor_free(BellaTensor *t);

/* ---- cuda only: the caller's device memory and stream (zero-copy interop with PyTorch,
 * JAX, CuPy; not run on a GPU yet). Other backends answer BELLA_ERR_INVALID. */
/* A tensor over ptr (row-major f32, at least numel(shape) of them, on the primary context of
 * device 0), used in place and never freed by bella; ptr must outlive the handle. */
BellaStatus bella_tensor_from_device_ptr(const BellaBackend *be, uint64_t ptr,
                                         const size_t *shape, size_t rank, BellaTensor **out);
/* The same with an element type: a bf16/f16 tensor (a PyTorch bfloat16/float16 tensor's
 * memory) needs an even element count and a 4-byte aligned ptr. */
BellaStatus bella_tensor_from_device_ptr_as(const BellaBackend *be, uint64_t ptr,
                                            const size_t *shape, size_t rank, int32_t dtype,
                                            BellaTensor **out);
/* The device address of a tensor's data, valid while the handle lives. */
BellaStatus bella_tensor_device_ptr(const BellaBackend *be, const BellaTensor *t,
                                    uint64_t *out);
/* use_stream != 0: queue all later work on stream (a CUstream; 0 = the legacy default
 * stream), which must outlive the tensors made meanwhile; use_stream == 0: bella's own
 * stream again. Earlier work is ordered before the switch. */
BellaStatus bella_cuda_set_stream(const BellaBackend *be, uintptr_t stream, int32_t use_stream);

/* ---- ops */
/* x [M, I] (shared) or [K, M, I], weight [O, I], bias [O] or NULL, lora_a [K, r, I],
 * lora_b [K, O, r]: y [K, M, O], h [K, M, r]. */
BellaStatus bella_lora_forward(const BellaBackend *be, const BellaTensor *x,
                               const BellaTensor *weight, const BellaTensor *bias,
                               const BellaTensor *lora_a, const BellaTensor *lora_b, float scale,
                               BellaTensor **y_out, BellaTensor **h_out);
BellaStatus bella_lora_backward(const BellaBackend *be, const BellaTensor *dy,
                                const BellaTensor *x, const BellaTensor *weight,
                                const BellaTensor *lora_a, const BellaTensor *lora_b,
                                const BellaTensor *h, float scale, BellaTensor **dx_out,
                                BellaTensor **d_lora_a_out, BellaTensor **d_lora_b_out);
BellaStatus bella_matmul(const BellaBackend *be, const BellaTensor *a, const BellaTensor *b,
                         bool trans_a, bool trans_b, float alpha, BellaTensor **c_out);
BellaStatus bella_pairwise_sqdist(const BellaBackend *be, const BellaTensor *theta,
                                  BellaTensor **out);
/* bandwidth NULL: the median heuristic; the bandwidth used is written to bandwidth_out. */
BellaStatus bella_rbf_kernel(const BellaBackend *be, const BellaTensor *theta,
                             const float *bandwidth, BellaTensor **kernel_out,
                             float *bandwidth_out);
BellaStatus bella_svgd_direction(const BellaBackend *be, const BellaTensor *theta,
                                 const BellaTensor *score, const BellaTensor *kernel,
                                 float bandwidth, BellaTensor **phi_out);
BellaStatus bella_adamw_step(const BellaBackend *be, BellaTensor *param, const BellaTensor *grad,
                             BellaTensor *m, BellaTensor *v, const BellaAdamW *hp);
/* svgd_direction, then AdamW with gradient grad_scale * phi, in place on theta, m, v. */
BellaStatus bella_svgd_step(const BellaBackend *be, BellaTensor *theta, const BellaTensor *score,
                            const BellaTensor *kernel, float bandwidth, float grad_scale,
                            BellaTensor *m, BellaTensor *v, const BellaAdamW *hp);
BellaStatus bella_relu_forward(const BellaBackend *be, const BellaTensor *x, BellaTensor **y_out);
BellaStatus bella_relu_backward(const BellaBackend *be, const BellaTensor *x,
                                const BellaTensor *dy, BellaTensor **dx_out);
BellaStatus bella_gelu_forward(const BellaBackend *be, const BellaTensor *x, BellaTensor **y_out);
BellaStatus bella_gelu_backward(const BellaBackend *be, const BellaTensor *x,
                                const BellaTensor *dy, BellaTensor **dx_out);
/* logits [K, M, C], labels: n_labels = M class indices. */
BellaStatus bella_softmax_xent(const BellaBackend *be, const BellaTensor *logits,
                               const uint32_t *labels, size_t n_labels, BellaTensor **loss_out,
                               BellaTensor **dlogits_out);
BellaStatus bella_ensemble_stats(const BellaBackend *be, const BellaTensor *logits,
                                 BellaTensor **probs_out, BellaTensor **entropy_out,
                                 BellaTensor **expected_entropy_out,
                                 BellaTensor **mutual_info_out);
BellaStatus bella_axpby(const BellaBackend *be, float alpha, const BellaTensor *x, float beta,
                        const BellaTensor *y, BellaTensor **out);

#ifdef __cplusplus
}
#endif

#endif /* BELLA_H */
