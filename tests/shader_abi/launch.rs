//! One dispatch of an ABI entry on raw wgpu, from `shaders/abi.json` alone: the pipeline's
//! bind group layout is made from the listed bindings, the parameters are packed by the
//! listed field offsets, and the linear workgroup count is folded into (x, y) as the ABI
//! says.

use bella::backend::wgpu::abi::{Access, Entry, ParamsIn, Scalar};
use std::collections::BTreeMap;
use wgpu::util::DeviceExt;

pub struct Device {
    device: wgpu::Device,
    queue: wgpu::Queue,
    max_per_dimension: u64,
    /// The device has `SHADER_F16` (requested where the adapter offers it), which the
    /// modules beginning with `enable f16;` need.
    pub shader_f16: bool,
}

/// The default adapter's device, or `Err` with why there is none.
pub fn open() -> Result<Device, String> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends =
        wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL);
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .map_err(|e| format!("no wgpu adapter: {e}"))?;
    let limits = adapter.limits();
    let f16 = adapter.features() & wgpu::Features::SHADER_F16;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("shader_abi"),
        required_features: f16,
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .map_err(|e| format!("no wgpu device: {e}"))?;
    Ok(Device {
        shader_f16: device.features().contains(wgpu::Features::SHADER_F16),
        device,
        queue,
        max_per_dimension: limits.max_compute_workgroups_per_dimension.max(1) as u64,
    })
}

/// The parameter struct's bytes: each field's value from `values` (padding absent: 0) at its
/// offset, in a buffer of the struct's size.
pub fn pack_params(entry: &Entry, values: &BTreeMap<String, f64>) -> Vec<u8> {
    let p = &entry.params;
    let mut bytes = vec![0u8; p.size as usize];
    for f in &p.fields {
        let v = match values.get(&f.name) {
            Some(v) => *v,
            None if f.is_padding() => 0.0,
            None => panic!("{}: example lacks parameter `{}`", entry.name, f.name),
        };
        let word = match f.ty {
            Scalar::U32 => v as u32,
            Scalar::F32 => (v as f32).to_bits(),
        };
        let at = f.offset as usize;
        bytes[at..at + 4].copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

/// (x, y) for `groups` linear workgroups: x = min(G, limit), y = ⌈G / x⌉.
pub fn fold(groups: u64, max: u64) -> (u32, u32) {
    let x = groups.clamp(1, max);
    (x as u32, groups.div_ceil(x).max(1) as u32)
}

impl Device {
    /// Dispatch `entry` of `source` with the given parameter bytes and buffers (words, by
    /// binding variable) on `groups` workgroups folded into (x, y) with x at most
    /// `per_dimension` (None: the adapter's limit); the read-write buffers are read back into
    /// `buffers`. A wgpu error comes back as `Err`.
    pub fn dispatch(
        &self,
        entry: &Entry,
        source: &str,
        params: &[u8],
        (groups, per_dimension): (u64, Option<u64>),
        buffers: &mut BTreeMap<String, Vec<u32>>,
    ) -> Result<(), String> {
        let d = &self.device;
        let scope = d.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer_entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let params_ty = match entry.params.params_in {
            ParamsIn::Uniform => wgpu::BufferBindingType::Uniform,
            ParamsIn::Storage => wgpu::BufferBindingType::Storage { read_only: true },
        };
        let mut layout_entries = vec![buffer_entry(entry.params.binding, params_ty)];
        for b in &entry.bindings {
            let read_only = b.access == Access::Read;
            layout_entries.push(buffer_entry(
                b.binding,
                wgpu::BufferBindingType::Storage { read_only },
            ));
        }
        let bgl = d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&entry.name),
            entries: &layout_entries,
        });
        let layout = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&entry.name),
            bind_group_layouts: &[Some(&bgl)],
            immediate_size: 0,
        });
        let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&entry.file),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&entry.name),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(&entry.name),
            compilation_options: Default::default(),
            cache: None,
        });
        let params_usage = match entry.params.params_in {
            ParamsIn::Uniform => wgpu::BufferUsages::UNIFORM,
            ParamsIn::Storage => wgpu::BufferUsages::STORAGE,
        };
        let params_buffer = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: params,
            usage: params_usage,
        });
        let storage: Vec<wgpu::Buffer> = entry
            .bindings
            .iter()
            .map(|b| {
                let words = &buffers[&b.var];
                d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(&b.var),
                    contents: bytemuck::cast_slice(words),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                })
            })
            .collect();
        let mut group_entries = vec![wgpu::BindGroupEntry {
            binding: entry.params.binding,
            resource: params_buffer.as_entire_binding(),
        }];
        for (b, buf) in entry.bindings.iter().zip(&storage) {
            group_entries.push(wgpu::BindGroupEntry {
                binding: b.binding,
                resource: buf.as_entire_binding(),
            });
        }
        let bind_group = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&entry.name),
            layout: &bgl,
            entries: &group_entries,
        });
        let written: Vec<(usize, wgpu::Buffer)> = entry
            .bindings
            .iter()
            .enumerate()
            .filter(|(_, b)| b.access == Access::ReadWrite)
            .map(|(i, _)| {
                let staging = d.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: storage[i].size(),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (i, staging)
            })
            .collect();
        let mut encoder = d.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            let max = per_dimension.unwrap_or(self.max_per_dimension);
            let (x, y) = fold(groups, max.min(self.max_per_dimension));
            pass.dispatch_workgroups(x, y, 1);
        }
        for (i, staging) in &written {
            encoder.copy_buffer_to_buffer(&storage[*i], 0, staging, 0, storage[*i].size());
        }
        self.queue.submit([encoder.finish()]);
        for (i, staging) in &written {
            staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("readback maps"));
            d.poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| format!("{}: waiting: {e}", entry.name))?;
            let words = {
                let view = staging
                    .get_mapped_range(..)
                    .map_err(|e| format!("{}: readback: {e}", entry.name))?;
                bytemuck::pod_collect_to_vec::<u8, u32>(&view)
            };
            staging.unmap();
            buffers.insert(entry.bindings[*i].var.clone(), words);
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(format!("{}: {e}", entry.name));
        }
        Ok(())
    }
}
