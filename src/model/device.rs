//! Backend and device selection from a run setting such as `cpu`, `cuda:0` or `wgpu`.
//!
//! burn 0.22 dispatches on the device at run time, so model code carries no backend type:
//! a [`Device`] says where tensors live, and [`train_device`] wraps it in autodiff for
//! training. The CPU backend is burn's pure-Rust `flex`; `cuda`, `wgpu` and `tch`
//! (libtorch on the CPU) are compiled in only with the cargo features of the same names.

use burn::tensor::Device;

use super::ModelError;

/// A parsed device setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// burn's `flex` CPU backend (default).
    Cpu,
    /// A CUDA GPU by index (cargo feature `cuda`).
    Cuda(usize),
    /// The default `wgpu` adapter (cargo feature `wgpu`).
    Wgpu,
    /// libtorch on the CPU through burn's `tch` backend (cargo feature `tch`).
    LibTorch,
}

impl DeviceSpec {
    /// Parses `cpu` | `cuda` | `cuda:N` | `wgpu` | `tch`.
    pub fn parse(spec: &str) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::Device {
            device: spec.to_string(),
            message,
        };
        match spec.trim() {
            "cpu" | "flex" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "wgpu" => Ok(DeviceSpec::Wgpu),
            "tch" | "libtorch" => Ok(DeviceSpec::LibTorch),
            other => match other.strip_prefix("cuda:") {
                Some(index) => index
                    .parse()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| bad(format!("`{index}` is not a GPU index"))),
                None => Err(bad("expected `cpu`, `cuda:N`, `wgpu` or `tch`".to_string())),
            },
        }
    }

    /// The name of the backend, as it goes into the keys of training stages.
    pub fn backend_name(&self) -> &'static str {
        match self {
            DeviceSpec::Cpu => "flex",
            DeviceSpec::Cuda(_) => "cuda",
            DeviceSpec::Wgpu => "wgpu",
            DeviceSpec::LibTorch => "tch",
        }
    }

    /// The burn device (without autodiff); an error when its backend is not compiled in.
    pub fn device(&self) -> Result<Device, ModelError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::flex()),
            DeviceSpec::Cuda(index) => cuda_device(*index),
            DeviceSpec::Wgpu => wgpu_device(),
            DeviceSpec::LibTorch => libtorch_device(),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<Device, ModelError> {
    cuda_driver_loads().map_err(|message| ModelError::Device {
        device: format!("cuda:{index}"),
        message,
    })?;
    Ok(Device::cuda(index))
}

/// Whether the CUDA driver library loads: cubecl loads it lazily and panics on the first
/// tensor when it is missing, so say so up front, as an error.
#[cfg(feature = "cuda")]
fn cuda_driver_loads() -> Result<(), String> {
    const DRIVER: &std::ffi::CStr = c"libcuda.so.1";
    // SAFETY: dlopen/dlclose on a constant library name; the handle is closed at once (the
    // library stays mapped only if something else holds it).
    unsafe {
        let handle = libc::dlopen(DRIVER.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            return Err(
                "the NVIDIA driver library (libcuda.so.1) could not be loaded: no \
                        GPU driver on this machine, or it is not on LD_LIBRARY_PATH"
                    .to_string(),
            );
        }
        libc::dlclose(handle);
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(index: usize) -> Result<Device, ModelError> {
    Err(ModelError::Device {
        device: format!("cuda:{index}"),
        message: "this `pipe` was built without CUDA; rebuild with `--features cuda`".into(),
    })
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, ModelError> {
    Ok(Device::wgpu(Default::default()))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device, ModelError> {
    Err(ModelError::Device {
        device: "wgpu".into(),
        message: "this `pipe` was built without wgpu; rebuild with `--features wgpu`".into(),
    })
}

#[cfg(feature = "tch")]
fn libtorch_device() -> Result<Device, ModelError> {
    // burn marks its tch backend deprecated in favour of CubeCL's; it is still the way to
    // PyTorch's own CPU kernels.
    #[allow(deprecated)]
    Ok(Device::libtorch())
}

#[cfg(not(feature = "tch"))]
fn libtorch_device() -> Result<Device, ModelError> {
    Err(ModelError::Device {
        device: "tch".into(),
        message: "this `pipe` was built without libtorch; rebuild with `--features tch` \
                  (see the README: LIBTORCH_USE_PYTORCH=1 with torch 2.9 installed by pip)"
            .into(),
    })
}

/// Parses a device string and returns the burn device (inference: no autodiff).
pub fn parse_device(spec: &str) -> Result<Device, ModelError> {
    DeviceSpec::parse(spec)?.device()
}

/// The backend name for a device string (`cpu` -> `flex`, `cuda:1` -> `cuda`, `wgpu`);
/// an unparsable string is returned as it is (parsing it as a device fails loudly anyway).
pub fn backend_name(device: &str) -> String {
    DeviceSpec::parse(device)
        .map(|spec| spec.backend_name().to_string())
        .unwrap_or_else(|_| device.trim().to_string())
}

/// The same device with autodiff enabled: tensors and modules created (or forked) on it
/// record gradients, and dropout is active.
pub fn train_device(device: &Device) -> Device {
    device.clone().autodiff()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::parse("cuda:3").unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse("wgpu").unwrap(), DeviceSpec::Wgpu);
        assert_eq!(DeviceSpec::parse("tch").unwrap(), DeviceSpec::LibTorch);
        assert_eq!(backend_name("libtorch"), "tch");
        assert!(DeviceSpec::parse("cuda:x").is_err());
        assert!(DeviceSpec::parse("tpu").is_err());
        assert_eq!(backend_name("cuda:1"), "cuda");
        assert_eq!(backend_name("cpu"), "flex");
    }

    #[test]
    fn cpu_device_is_available() {
        let device = parse_device("cpu").unwrap();
        assert!(!device.is_autodiff());
        assert!(train_device(&device).is_autodiff());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_says_how_to_get_it() {
        let message = parse_device("cuda:0").unwrap_err().to_string();
        assert!(message.contains("--features cuda"), "{message}");
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn tch_without_feature_says_how_to_get_it() {
        let message = parse_device("tch").unwrap_err().to_string();
        assert!(message.contains("--features tch"), "{message}");
    }
}
