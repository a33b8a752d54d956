//! `softmax_xent` and `ensemble_stats` (kernels/softmax.ptx): one warp per row.

use super::driver::{Driver, Param};
use super::modules::{grid_1d, u32_of, BLOCK, SOFTMAX};
use super::{ptr, PtxBackend};
use crate::backend::EnsembleStats;
use crate::error::Result;
use crate::tensor::Tensor;

const WARPS_PER_BLOCK: usize = BLOCK as usize / 32;

pub fn xent<D: Driver>(
    be: &PtxBackend<D>,
    logits: &Tensor,
    labels: &[u32],
    k: usize,
    m: usize,
    c: usize,
) -> Result<(Tensor, Tensor)> {
    let kn = "softmax_xent_rows";
    let rows = k * m;
    let dl = be.storage(rows * c)?;
    let loss = be.storage(k)?;
    if rows == 0 || c == 0 {
        return Ok((be.tensor(&[k], loss)?, be.tensor(&[k, m, c], dl)?));
    }
    u32_of(kn, "K*M*C", rows * c)?;
    // Labels travel as raw u32 bits in an f32 buffer.
    let lab = be
        .driver()
        .upload(bytemuck::cast_slice::<u32, f32>(labels))?;
    let row_loss = be.storage(rows)?;
    be.launch_named(
        SOFTMAX,
        kn,
        grid_1d(be.props(), rows.div_ceil(WARPS_PER_BLOCK), 16),
        vec![
            ("p_dl", ptr(&dl.buf)),
            ("p_rowloss", ptr(&row_loss.buf)),
            ("p_logits", ptr(be.buf(logits)?)),
            ("p_labels", ptr(&lab)),
            ("p_rows", Param::U32(rows as u32)),
            ("p_m", Param::U32(m as u32)),
            ("p_c", Param::U32(c as u32)),
            ("p_inv_m", Param::F32(1.0 / m as f32)),
        ],
    )?;
    be.launch_named(
        SOFTMAX,
        "row_mean",
        grid_1d(be.props(), k, 16),
        vec![
            ("p_out", ptr(&loss.buf)),
            ("p_in", ptr(&row_loss.buf)),
            ("p_groups", Param::U32(k as u32)),
            ("p_count", Param::U32(m as u32)),
            ("p_scale", Param::F32(1.0 / m as f32)),
        ],
    )?;
    // `lab` and `row_loss` are freed on return, after the queued kernels that read them:
    // the CUDA driver frees on its one stream (or with cuMemFree, which waits for the
    // device), and the simulator runs launches synchronously.
    Ok((be.tensor(&[k], loss)?, be.tensor(&[k, m, c], dl)?))
}

pub fn ensemble_stats<D: Driver>(
    be: &PtxBackend<D>,
    logits: &Tensor,
    k: usize,
    m: usize,
    c: usize,
) -> Result<EnsembleStats> {
    let kn = "ensemble_stats";
    u32_of(kn, "K*M*C", k * m * c)?;
    let probs = be.storage(m * c)?;
    let ent = be.storage(m)?;
    let expd = be.storage(m)?;
    let mi = be.storage(m)?;
    if m > 0 && c > 0 && k > 0 {
        be.launch_named(
            SOFTMAX,
            kn,
            grid_1d(be.props(), m.div_ceil(WARPS_PER_BLOCK), 16),
            vec![
                ("p_probs", ptr(&probs.buf)),
                ("p_entropy", ptr(&ent.buf)),
                ("p_expected", ptr(&expd.buf)),
                ("p_mi", ptr(&mi.buf)),
                ("p_logits", ptr(be.buf(logits)?)),
                ("p_k", Param::U32(k as u32)),
                ("p_m", Param::U32(m as u32)),
                ("p_c", Param::U32(c as u32)),
                ("p_inv_k", Param::F32(1.0 / k as f32)),
            ],
        )?;
    }
    Ok(EnsembleStats {
        probs: be.tensor(&[m, c], probs)?,
        entropy: be.tensor(&[m], ent)?,
        expected_entropy: be.tensor(&[m], expd)?,
        mutual_info: be.tensor(&[m], mi)?,
    })
}
