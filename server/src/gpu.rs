//! NVIDIA GPUs through NVML: each GPU's memory, and how much of it each process holds.
//!
//! `libnvidia-ml.so.1` is loaded at run time (no build-time CUDA dependency), once: without a
//! driver or a GPU the probe fails once, quietly, and every GPU field stays absent.

use app::snapshot::GpuStats;
use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use std::collections::HashMap;
use std::ffi::OsStr;

/// Where NVML is looked for, in order: the loader's search path (which includes the usual
/// library folders), then where NVIDIA's container toolkit mounts it.
const LIBRARY_PATHS: [&str; 4] = [
    "libnvidia-ml.so.1",
    "libnvidia-ml.so",
    "/usr/local/nvidia/lib64/libnvidia-ml.so.1",
    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
];

/// The machine's NVIDIA GPUs, when a driver answers.
pub struct Gpus {
    nvml: Option<Nvml>,
}

/// One reading of every GPU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuSample {
    /// Each GPU's memory, in NVML's order.
    pub devices: Vec<GpuStats>,
    /// GPU memory per process: pid → (GPU index, bytes) for each GPU it uses.
    pub by_pid: HashMap<u32, Vec<(u32, u64)>>,
}

impl Gpus {
    /// Loads NVML from the first of [`LIBRARY_PATHS`] that works.
    pub fn probe() -> Self {
        Self::probe_paths(&LIBRARY_PATHS)
    }

    /// Loads NVML from the first of `paths` that works; none without a driver.
    pub fn probe_paths(paths: &[&str]) -> Self {
        let mut errors = Vec::new();
        for path in paths {
            match Nvml::builder().lib_path(OsStr::new(path)).init() {
                Ok(nvml) => {
                    tracing::info!("NVML loaded from {path}: GPU memory is measured");
                    return Self { nvml: Some(nvml) };
                }
                Err(e) => errors.push(format!("{path}: {e}")),
            }
        }
        tracing::debug!(
            "no NVIDIA driver (GPU memory not measured): {}",
            errors.join("; ")
        );
        Self { nvml: None }
    }

    /// Whether a driver answered the probe.
    pub fn present(&self) -> bool {
        self.nvml.is_some()
    }

    /// Reads every GPU's memory and its processes; `None` without a driver. A GPU that fails
    /// to answer is left out rather than failing the rest.
    pub fn sample(&self) -> Option<GpuSample> {
        let nvml = self.nvml.as_ref()?;
        let mut sample = GpuSample::default();
        let count = nvml.device_count().unwrap_or(0);
        for index in 0..count {
            let Ok(device) = nvml.device_by_index(index) else {
                continue;
            };
            let Ok(memory) = device.memory_info() else {
                continue;
            };
            sample.devices.push(GpuStats {
                index,
                name: device.name().unwrap_or_else(|_| format!("GPU {index}")),
                memory_used: memory.used,
                memory_total: memory.total,
            });
            let compute = device.running_compute_processes().unwrap_or_default();
            let graphics = device.running_graphics_processes().unwrap_or_default();
            // A process may be listed as both; count it once per GPU.
            let mut on_this: HashMap<u32, u64> = HashMap::new();
            for process in compute.into_iter().chain(graphics) {
                if let UsedGpuMemory::Used(bytes) = process.used_gpu_memory {
                    let held = on_this.entry(process.pid).or_default();
                    *held = (*held).max(bytes);
                }
            }
            for (pid, bytes) in on_this {
                sample.by_pid.entry(pid).or_default().push((index, bytes));
            }
        }
        Some(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_there_is_no_sample_and_no_error() {
        let started = std::time::Instant::now();
        let gpus = Gpus::probe_paths(&["/nonexistent/libnvidia-ml.so.1"]);
        assert!(!gpus.present());
        assert_eq!(gpus.sample(), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
