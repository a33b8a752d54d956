//! The WGSL kernels: sources, cached pipelines and bind-group layouts, and the one routine
//! that encodes a sequence of dispatches into a single compute pass and submission.
//!
//! Binding convention of every entry point: binding 0 is its parameter struct, then `reads`
//! read-only storage buffers, then `writes` read-write ones, in that order. Each kernel's
//! file, parameter buffer kind and binding counts come from `shaders/abi.json`
//! ([`super::abi`]); [`run`] checks every dispatch's parameters and buffers against it.
//!
//! The parameter struct is a uniform buffer, except for the kernels marked
//! [`ParamsIn::Storage`], which read it from a read-only storage buffer. Mesa's lavapipe
//! (22.x, the CPU Vulkan driver) "inlines" uniform-buffer values that steer loops and
//! branches: every time such a pipeline is bound it compiles a new variant of the shader
//! with the values folded in, and never frees the previous one. For a kernel where that
//! pays off (by lavapipe's own measure) each dispatch costs a full LLVM compile and leaks
//! about 1–2 MB. Parameters read from a storage buffer are never inlined.

use super::abi::{self, Access, Entry, ParamsIn, Value};
use super::gpu::{Gpu, NAME};
use super::pool::{Pool, STORAGE, UNIFORM};
use crate::error::{BellaError, Result};
use std::collections::HashMap;
use std::sync::Mutex;

/// The files under `shaders/`, one shader module each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Lora,
    Matmul,
    /// `matmul_f16.wgsl`, which begins with `enable f16;`: built only on a device with
    /// `SHADER_F16` (the host picks its kernel only there).
    MatmulF16,
    Svgd,
    Optim,
    Activation,
    Softmax,
    Cast,
}

impl Family {
    /// The family of a file named in the ABI.
    fn of_file(file: &str) -> Option<Family> {
        Some(match file {
            "lora.wgsl" => Family::Lora,
            "matmul.wgsl" => Family::Matmul,
            "matmul_f16.wgsl" => Family::MatmulF16,
            "svgd.wgsl" => Family::Svgd,
            "optim.wgsl" => Family::Optim,
            "activation.wgsl" => Family::Activation,
            "softmax.wgsl" => Family::Softmax,
            "cast.wgsl" => Family::Cast,
            _ => return None,
        })
    }

    fn source(self) -> &'static str {
        match self {
            Family::Lora => include_str!("../../../shaders/lora.wgsl"),
            Family::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Family::MatmulF16 => include_str!("../../../shaders/matmul_f16.wgsl"),
            Family::Svgd => include_str!("../../../shaders/svgd.wgsl"),
            Family::Optim => include_str!("../../../shaders/optim.wgsl"),
            Family::Activation => include_str!("../../../shaders/activation.wgsl"),
            Family::Softmax => include_str!("../../../shaders/softmax.wgsl"),
            Family::Cast => include_str!("../../../shaders/cast.wgsl"),
        }
    }
}

/// The entry points the host dispatches, each the key of its `shaders/abi.json` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    LoraForward,
    LoraForward128,
    LoraForwardBf16,
    LoraForwardF16,
    LoraForwardBf16_128,
    LoraForwardF16_128,
    LoraDx,
    LoraDx128,
    GemmTiled,
    GemmTiled128,
    GemmNarrowSplitK,
    GemmTiledBf16,
    GemmTiledF16,
    GemmTiledF16Native,
    GemmNarrowSplitKBf16,
    GemmNarrowSplitKF16,
    SqdistPartial,
    SqdistFinalize,
    RbfFromSqdist,
    SvgdDirection,
    AdamwStep,
    ReluForward,
    ReluBackward,
    GeluForward,
    GeluBackward,
    Axpby,
    SoftmaxXentRows,
    RowMean,
    EnsembleStats,
    CastF32ToBf16,
    CastF32ToF16,
    CastBf16ToF32,
    CastF16ToF32,
}

/// Where a kernel lives, how it reads its parameters and how many read-only / read-write
/// storage buffers it binds: all from its ABI entry.
pub(super) struct Spec {
    family: Family,
    entry: &'static Entry,
    params: ParamsIn,
    reads: u32,
    writes: u32,
}

impl Kernel {
    /// The entry point's name (its key in `shaders/abi.json`).
    pub fn entry_name(self) -> &'static str {
        match self {
            Kernel::LoraForward => "lora_forward",
            Kernel::LoraForward128 => "lora_forward_128",
            Kernel::LoraForwardBf16 => "lora_forward_bf16",
            Kernel::LoraForwardF16 => "lora_forward_f16",
            Kernel::LoraForwardBf16_128 => "lora_forward_bf16_128",
            Kernel::LoraForwardF16_128 => "lora_forward_f16_128",
            Kernel::LoraDx => "lora_dx",
            Kernel::LoraDx128 => "lora_dx_128",
            Kernel::GemmTiled => "gemm_tiled",
            Kernel::GemmTiled128 => "gemm_tiled_128",
            Kernel::GemmNarrowSplitK => "gemm_narrow_splitk",
            Kernel::GemmTiledBf16 => "gemm_tiled_bf16",
            Kernel::GemmTiledF16 => "gemm_tiled_f16",
            Kernel::GemmTiledF16Native => "gemm_tiled_f16_native",
            Kernel::GemmNarrowSplitKBf16 => "gemm_narrow_splitk_bf16",
            Kernel::GemmNarrowSplitKF16 => "gemm_narrow_splitk_f16",
            Kernel::SqdistPartial => "sqdist_partial",
            Kernel::SqdistFinalize => "sqdist_finalize",
            Kernel::RbfFromSqdist => "rbf_from_sqdist",
            Kernel::SvgdDirection => "svgd_direction",
            Kernel::AdamwStep => "adamw_step",
            Kernel::ReluForward => "relu_forward",
            Kernel::ReluBackward => "relu_backward",
            Kernel::GeluForward => "gelu_forward",
            Kernel::GeluBackward => "gelu_backward",
            Kernel::Axpby => "axpby",
            Kernel::SoftmaxXentRows => "softmax_xent_rows",
            Kernel::RowMean => "row_mean",
            Kernel::EnsembleStats => "ensemble_stats",
            Kernel::CastF32ToBf16 => "cast_f32_to_bf16",
            Kernel::CastF32ToF16 => "cast_f32_to_f16",
            Kernel::CastBf16ToF32 => "cast_bf16_to_f32",
            Kernel::CastF16ToF32 => "cast_f16_to_f32",
        }
    }

    pub(super) fn spec(self) -> Result<Spec> {
        let name = self.entry_name();
        let missing = |what: String| BellaError::device(NAME, format!("kernel `{name}`: {what}"));
        let entry = abi::entry(name).ok_or_else(|| missing("not in shaders/abi.json".into()))?;
        let family = Family::of_file(&entry.file)
            .ok_or_else(|| missing(format!("unknown shader file `{}`", entry.file)))?;
        // The layouts built here number the storage bindings 1.. with the read-only ones first.
        let in_order = entry.bindings.iter().enumerate().all(|(i, b)| {
            b.binding == i as u32 + 1 && (b.access == Access::Read) == (i < entry.reads())
        });
        if entry.params.binding != 0 || !in_order {
            return Err(missing(
                "the ABI's bindings are not the params at 0, then read-only, then read-write \
                 storage buffers numbered from 1"
                    .into(),
            ));
        }
        Ok(Spec {
            family,
            entry,
            params: entry.params.params_in,
            reads: entry.reads() as u32,
            writes: entry.writes() as u32,
        })
    }
}

/// A dispatch's parameters: in the struct's field order, or by field name (put in order by
/// the ABI). Either way [`run`] checks them against the kernel's ABI entry (count, types,
/// names) and pads them to the struct's size.
pub struct Params(Packing);

enum Packing {
    InOrder(Vec<Value>),
    ByName(Vec<(&'static str, Value)>),
}

impl Default for Params {
    fn default() -> Self {
        Params(Packing::InOrder(Vec::new()))
    }
}

impl Params {
    /// An empty parameter list whose values are given by field name ([`Params::set_u`],
    /// [`Params::set_f`]).
    pub fn named() -> Self {
        Params(Packing::ByName(Vec::new()))
    }

    fn push(mut self, name: &'static str, v: Value) -> Self {
        match &mut self.0 {
            Packing::InOrder(values) => values.push(v),
            Packing::ByName(values) => values.push((name, v)),
        }
        self
    }

    /// The next field, a `u32` (tests: positional lists, checked against the ABI too).
    #[cfg(test)]
    pub fn u(self, v: usize) -> Self {
        self.push("", Value::U(v as u32))
    }

    /// The next field, an `f32` (tests).
    #[cfg(test)]
    pub fn f(self, v: f32) -> Self {
        self.push("", Value::F(v))
    }

    /// The `u32` field `name` (for [`Params::named`]).
    pub fn set_u(self, name: &'static str, v: usize) -> Self {
        self.push(name, Value::U(v as u32))
    }

    /// The `f32` field `name` (for [`Params::named`]).
    pub fn set_f(self, name: &'static str, v: f32) -> Self {
        self.push(name, Value::F(v))
    }

    /// The struct's bytes as `entry` lays it out.
    fn bytes(&self, entry: &Entry) -> Result<Vec<u8>> {
        let words = match &self.0 {
            Packing::InOrder(values) => entry.pack(values)?,
            Packing::ByName(values) => entry.pack_named(values)?,
        };
        Ok(bytemuck::cast_slice(&words).to_vec())
    }
}

/// One storage binding: a buffer and the bytes of it the kernel may touch.
#[derive(Clone, Copy)]
pub struct Binding<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub bytes: u64,
}

/// One dispatch: `groups` workgroups, numbered linearly (the kernels unfold the 2-D grid).
pub struct Step<'a> {
    pub kernel: Kernel,
    pub params: Params,
    pub bindings: Vec<Binding<'a>>,
    pub groups: u64,
}

/// Bind-group and pipeline layouts keyed by (how parameters arrive, read-only and
/// read-write storage binding counts).
type LayoutCache = HashMap<(ParamsIn, u32, u32), (wgpu::BindGroupLayout, wgpu::PipelineLayout)>;

/// Shader modules, layouts and pipelines, each built once on first use.
#[derive(Default)]
pub struct Kernels {
    modules: Mutex<HashMap<Family, wgpu::ShaderModule>>,
    layouts: Mutex<LayoutCache>,
    pipelines: Mutex<HashMap<Kernel, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>>,
}

fn poisoned() -> BellaError {
    BellaError::device(NAME, "kernel cache lock poisoned by an earlier panic")
}

impl Kernels {
    fn layout(
        &self,
        gpu: &Gpu,
        params: ParamsIn,
        reads: u32,
        writes: u32,
    ) -> Result<(wgpu::BindGroupLayout, wgpu::PipelineLayout)> {
        let mut layouts = self.layouts.lock().map_err(|_| poisoned())?;
        if let Some(l) = layouts.get(&(params, reads, writes)) {
            return Ok(l.clone());
        }
        let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries = vec![match params {
            ParamsIn::Uniform => wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
            ParamsIn::Storage => storage(0, true),
        }];
        entries.extend((1..=reads).map(|b| storage(b, true)));
        entries.extend((reads + 1..=reads + writes).map(|b| storage(b, false)));
        let bgl = gpu
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("bella"),
                entries: &entries,
            });
        let pl = gpu
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("bella"),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
        layouts.insert((params, reads, writes), (bgl.clone(), pl.clone()));
        Ok((bgl, pl))
    }

    fn module(&self, gpu: &Gpu, family: Family) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().map_err(|_| poisoned())?;
        if let Some(m) = modules.get(&family) {
            return Ok(m.clone());
        }
        let m = gpu
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&format!("{family:?}")),
                source: wgpu::ShaderSource::Wgsl(family.source().into()),
            });
        modules.insert(family, m.clone());
        Ok(m)
    }

    /// The pipeline of `kernel` and its bind-group layout, built on first use.
    pub fn pipeline(
        &self,
        gpu: &Gpu,
        kernel: Kernel,
    ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        if let Some(p) = self.pipelines.lock().map_err(|_| poisoned())?.get(&kernel) {
            return Ok(p.clone());
        }
        let spec = kernel.spec()?;
        let name = kernel.entry_name();
        if spec.family == Family::MatmulF16 && !gpu.shader_f16 {
            return Err(BellaError::device(
                NAME,
                format!("kernel `{name}` needs SHADER_F16, which this device was opened without"),
            ));
        }
        let built = gpu.scoped(&format!("building kernel `{name}`"), || {
            let module = self.module(gpu, spec.family)?;
            let (bgl, layout) = self.layout(gpu, spec.params, spec.reads, spec.writes)?;
            let pipeline = gpu
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: Some(&layout),
                    module: &module,
                    entry_point: Some(name),
                    compilation_options: Default::default(),
                    cache: None,
                });
            Ok((pipeline, bgl))
        })?;
        self.pipelines
            .lock()
            .map_err(|_| poisoned())?
            .insert(kernel, built.clone());
        Ok(built)
    }

    /// Whether `kernel`'s pipeline has been built on this device (tests: which path ran).
    #[cfg(test)]
    pub fn built(&self, kernel: Kernel) -> bool {
        self.pipelines.lock().is_ok_and(|p| p.contains_key(&kernel))
    }
}

/// Encode `steps` into one compute pass, submit once, and turn any wgpu error into `Err`.
pub fn run(gpu: &Gpu, pool: &Pool, kernels: &Kernels, op: &str, steps: &[Step]) -> Result<()> {
    let max_binding = gpu.max_binding_bytes();
    let mut prepared = Vec::with_capacity(steps.len());
    for step in steps.iter().filter(|s| s.groups > 0) {
        let spec = step.kernel.spec()?;
        let name = step.kernel.entry_name();
        if step.bindings.len() != spec.entry.bindings.len() {
            return Err(BellaError::device(
                NAME,
                format!(
                    "{op}: kernel `{name}` given {} buffers, its ABI entry binds {}",
                    step.bindings.len(),
                    spec.entry.bindings.len()
                ),
            ));
        }
        if let Some(b) = step.bindings.iter().find(|b| b.bytes > max_binding) {
            return Err(BellaError::device(
                NAME,
                format!(
                    "{op}: kernel `{name}` would bind a tensor of {} bytes, past the adapter's \
                     storage-binding limit of {max_binding} bytes; split the work into smaller tensors",
                    b.bytes
                ),
            ));
        }
        let vec4_misfit = step
            .bindings
            .iter()
            .zip(&spec.entry.bindings)
            .find(|(b, s)| s.elem == "vec4<f32>" && !b.bytes.is_multiple_of(16));
        if let Some((b, s)) = vec4_misfit {
            return Err(BellaError::device(
                NAME,
                format!(
                    "{op}: kernel `{name}` binds `{}` as vec4<f32> but is given {} bytes, not a \
                     multiple of 16",
                    s.var, b.bytes
                ),
            ));
        }
        let bytes = step
            .params
            .bytes(spec.entry)
            .map_err(|e| BellaError::device(NAME, format!("{op}: {e}")))?;
        let (pipeline, bgl) = kernels.pipeline(gpu, step.kernel)?;
        let groups = gpu.fold(&format!("{op} ({name})"), step.groups)?;
        prepared.push((step, spec.params, bytes, pipeline, bgl, groups));
    }
    let mut uniforms = Vec::with_capacity(prepared.len());
    let result = gpu.scoped(op, || {
        let mut bind_groups = Vec::with_capacity(prepared.len());
        for (step, params_in, bytes, _, bgl, _) in &prepared {
            let usage = match params_in {
                ParamsIn::Uniform => UNIFORM,
                ParamsIn::Storage => STORAGE,
            };
            let uniform = pool.take(gpu, bytes.len() as u64, usage)?;
            gpu.queue.write_buffer(&uniform, 0, bytes);
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &uniform,
                    offset: 0,
                    size: wgpu::BufferSize::new(bytes.len() as u64),
                }),
            }];
            for (i, b) in step.bindings.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b.buffer,
                        offset: 0,
                        size: wgpu::BufferSize::new(b.bytes),
                    }),
                });
            }
            bind_groups.push(gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: bgl,
                entries: &entries,
            }));
            uniforms.push(uniform);
        }
        let mut timed = gpu.timer.as_ref().and_then(|t| t.begin());
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(op),
                timestamp_writes: timed.as_ref().map(|t| wgpu::ComputePassTimestampWrites {
                    query_set: t.query_set(),
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            for ((.., pipeline, _, (x, y)), bg) in prepared.iter().zip(&bind_groups) {
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(*x, *y, 1);
            }
        }
        if let Some(t) = timed.as_mut() {
            t.resolve(&mut encoder);
        }
        gpu.queue.submit([encoder.finish()]);
        drop(timed);
        Ok(())
    });
    for u in uniforms {
        pool.give(u);
    }
    result
}
