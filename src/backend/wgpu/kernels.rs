//! The WGSL kernels: sources, cached pipelines and bind-group layouts, and the one routine
//! that encodes a sequence of dispatches into a single compute pass and submission.
//!
//! Binding convention of every entry point: binding 0 is its parameter struct, then `reads`
//! read-only storage buffers, then `writes` read-write ones, in that order.
//!
//! The parameter struct is a uniform buffer, except for the kernels marked
//! [`ParamsIn::Storage`], which read it from a read-only storage buffer. Mesa's lavapipe
//! (22.x, the CPU Vulkan driver) "inlines" uniform-buffer values that steer loops and
//! branches: every time such a pipeline is bound it compiles a new variant of the shader
//! with the values folded in, and never frees the previous one. For a kernel where that
//! pays off (by lavapipe's own measure) each dispatch costs a full LLVM compile and leaks
//! about 1–2 MB. Parameters read from a storage buffer are never inlined.

use super::gpu::{Gpu, NAME};
use super::pool::{Pool, STORAGE, UNIFORM};
use crate::error::{BellaError, Result};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Lora,
    Matmul,
    Svgd,
    Optim,
    Activation,
    Softmax,
}

impl Family {
    fn source(self) -> &'static str {
        match self {
            Family::Lora => include_str!("../../../shaders/lora.wgsl"),
            Family::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Family::Svgd => include_str!("../../../shaders/svgd.wgsl"),
            Family::Optim => include_str!("../../../shaders/optim.wgsl"),
            Family::Activation => include_str!("../../../shaders/activation.wgsl"),
            Family::Softmax => include_str!("../../../shaders/softmax.wgsl"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    LoraForward,
    LoraForward128,
    LoraDx,
    LoraDx128,
    GemmTiled,
    GemmTiled128,
    GemmNarrowSplitK,
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
}

/// The buffer kind an entry point declares for its parameter struct (binding 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ParamsIn {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>`: for kernels that lavapipe would recompile on every dispatch
    /// (see the module docs).
    Storage,
}

/// Where a kernel lives, how it reads its parameters and how many read-only / read-write
/// storage buffers it binds.
struct Spec {
    family: Family,
    entry: &'static str,
    params: ParamsIn,
    reads: u32,
    writes: u32,
}

impl Kernel {
    fn spec(self) -> Spec {
        use Family::*;
        let (family, entry, reads, writes) = match self {
            Kernel::LoraForward => (Lora, "lora_forward", 5, 1),
            Kernel::LoraForward128 => (Lora, "lora_forward_128", 5, 1),
            Kernel::LoraDx => (Lora, "lora_dx", 4, 1),
            Kernel::LoraDx128 => (Lora, "lora_dx_128", 4, 1),
            Kernel::GemmTiled => (Matmul, "gemm_tiled", 2, 1),
            Kernel::GemmTiled128 => (Matmul, "gemm_tiled_128", 2, 1),
            Kernel::GemmNarrowSplitK => (Matmul, "gemm_narrow_splitk", 2, 1),
            Kernel::SqdistPartial => (Svgd, "sqdist_partial", 1, 1),
            Kernel::SqdistFinalize => (Svgd, "sqdist_finalize", 1, 1),
            Kernel::RbfFromSqdist => (Svgd, "rbf_from_sqdist", 1, 1),
            Kernel::SvgdDirection => (Svgd, "svgd_direction", 3, 1),
            Kernel::AdamwStep => (Optim, "adamw_step", 1, 3),
            Kernel::ReluForward => (Activation, "relu_forward", 1, 1),
            Kernel::ReluBackward => (Activation, "relu_backward", 2, 1),
            Kernel::GeluForward => (Activation, "gelu_forward", 1, 1),
            Kernel::GeluBackward => (Activation, "gelu_backward", 2, 1),
            Kernel::Axpby => (Activation, "axpby", 2, 1),
            Kernel::SoftmaxXentRows => (Softmax, "softmax_xent_rows", 2, 2),
            Kernel::RowMean => (Softmax, "row_mean", 1, 1),
            Kernel::EnsembleStats => (Softmax, "ensemble_stats", 1, 4),
        };
        let params = match self {
            Kernel::LoraForward
            | Kernel::LoraForward128
            | Kernel::LoraDx
            | Kernel::LoraDx128
            | Kernel::GemmTiled
            | Kernel::GemmTiled128
            | Kernel::GemmNarrowSplitK
            | Kernel::SqdistPartial
            | Kernel::SqdistFinalize
            | Kernel::SvgdDirection => ParamsIn::Storage,
            _ => ParamsIn::Uniform,
        };
        Spec {
            family,
            entry,
            params,
            reads,
            writes,
        }
    }
}

/// Uniform parameters, packed as the WGSL structs declare them (4-byte scalars in order),
/// padded to the 16-byte size uniform structs have.
#[derive(Default)]
pub struct Params(Vec<u32>);

impl Params {
    pub fn u(mut self, v: usize) -> Self {
        self.0.push(v as u32);
        self
    }
    pub fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut words = self.0.clone();
        words.resize(words.len().div_ceil(4).max(1) * 4, 0);
        bytemuck::cast_slice(&words).to_vec()
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
        let spec = kernel.spec();
        let built = gpu.scoped(&format!("building kernel `{}`", spec.entry), || {
            let module = self.module(gpu, spec.family)?;
            let (bgl, layout) = self.layout(gpu, spec.params, spec.reads, spec.writes)?;
            let pipeline = gpu
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(spec.entry),
                    layout: Some(&layout),
                    module: &module,
                    entry_point: Some(spec.entry),
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
}

/// Encode `steps` into one compute pass, submit once, and turn any wgpu error into `Err`.
pub fn run(gpu: &Gpu, pool: &Pool, kernels: &Kernels, op: &str, steps: &[Step]) -> Result<()> {
    let max_binding = gpu.max_binding_bytes();
    let mut prepared = Vec::with_capacity(steps.len());
    for step in steps.iter().filter(|s| s.groups > 0) {
        let spec = step.kernel.spec();
        if step.bindings.len() != (spec.reads + spec.writes) as usize {
            return Err(BellaError::device(
                NAME,
                format!(
                    "{op}: kernel `{}` given {} buffers",
                    spec.entry,
                    step.bindings.len()
                ),
            ));
        }
        if let Some(b) = step.bindings.iter().find(|b| b.bytes > max_binding) {
            return Err(BellaError::device(
                NAME,
                format!(
                    "{op}: kernel `{}` would bind a tensor of {} bytes, past the adapter's \
                     storage-binding limit of {max_binding} bytes; split the work into smaller tensors",
                    spec.entry, b.bytes
                ),
            ));
        }
        let (pipeline, bgl) = kernels.pipeline(gpu, step.kernel)?;
        let groups = gpu.fold(&format!("{op} ({})", spec.entry), step.groups)?;
        prepared.push((step, pipeline, bgl, groups));
    }
    let mut uniforms = Vec::with_capacity(prepared.len());
    let result = gpu.scoped(op, || {
        let mut bind_groups = Vec::with_capacity(prepared.len());
        for (step, _, bgl, _) in &prepared {
            let bytes = step.params.bytes();
            let usage = match step.kernel.spec().params {
                ParamsIn::Uniform => UNIFORM,
                ParamsIn::Storage => STORAGE,
            };
            let uniform = pool.take(gpu, bytes.len() as u64, usage)?;
            gpu.queue.write_buffer(&uniform, 0, &bytes);
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
            for ((_, pipeline, _, (x, y)), bg) in prepared.iter().zip(&bind_groups) {
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
