//! Checkpoint loading: every supported layout loads, and every broken file is one error that
//! names the file and each offending tensor, never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use vsr::checkpoint::{self, StateDict};
use vsr::model::VsrNetConfig;
use vsr::Error;

fn vsrnet(path: &Path) -> vsr::Result<vsr::model::VsrNet<Cpu>> {
    checkpoint::load_vsrnet::<Cpu>(path, &VsrNetConfig::new(), &Default::default())
}

fn flownet(path: &Path) -> vsr::Result<vsr::model::FlowNetSD<Cpu>> {
    checkpoint::load_flownet::<Cpu>(path, &Default::default())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Writes a state dict as safetensors (the format we can produce without Python).
fn write_state(dir: &Path, name: &str, state: &StateDict) -> PathBuf {
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = state
        .iter()
        .map(|(k, v)| {
            let v = v.clone().convert::<f32>();
            (k.clone(), v.shape.to_vec(), v.as_slice::<f32>().unwrap().iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect();
    let views: Vec<_> = owned
        .iter()
        .map(|(k, s, b)| (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    write(dir, name, &bytes)
}

fn message(e: Error) -> String {
    format!("{e}")
}

#[test]
fn loads_legacy_flownet_checkpoint_with_state_dict_key() {
    let net = flownet(&flownet_checkpoint()).expect("legacy checkpoint loads");
    use burn::module::Module;
    assert_eq!(net.num_params(), 45_371_666);
}

#[test]
fn loads_zip_vsrnet_state_dict_with_module_prefix() {
    vsrnet(&fixture("vsrnet_zip.pth")).expect("zip state dict with module. prefix loads");
}

#[test]
fn loads_flownet_from_whole_vsrnet_state_dict_and_bare_dict() {
    let dir = tempfile::tempdir().unwrap();
    let state = checkpoint::read_state_dict(&flownet_checkpoint()).unwrap();
    // bare dict, DataParallel prefixes
    let bare: StateDict = state.iter().map(|(k, v)| (format!("module.{k}"), v.clone())).collect();
    flownet(&write_state(dir.path(), "bare.safetensors", &bare)).expect("module.-prefixed bare dict");
    // whole VSRNet: FlowNetSD under FlowNetSD_network., VSRNet's own keys beside it
    let mut whole: StateDict = state.iter().map(|(k, v)| (format!("FlowNetSD_network.{k}"), v.clone())).collect();
    whole.extend(checkpoint::read_state_dict(&fixture("vsrnet_zip.pth")).unwrap());
    let p = write_state(dir.path(), "whole.safetensors", &whole);
    flownet(&p).expect("FlowNetSD from a whole-VSRNet dict");
    vsrnet(&p).expect("VSRNet from a whole-VSRNet dict");
}

#[test]
fn missing_file_names_the_file() {
    let e = message(vsrnet(Path::new("/nonexistent/vsrnet.pth")).unwrap_err());
    assert!(e.contains("/nonexistent/vsrnet.pth") && e.to_lowercase().contains("no such file"), "{e}");
}

#[test]
fn not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("empty.pth", &b""[..]), ("text.pth", &b"hello, this is not a checkpoint\n"[..])] {
        let p = write(dir.path(), name, bytes);
        let e = message(vsrnet(&p).unwrap_err());
        assert!(e.contains(name) && e.contains("not a readable checkpoint"), "{e}");
    }
    let e = message(flownet(&fixture("../../assets/bikes.mp4")).unwrap_err());
    assert!(e.contains("bikes.mp4"), "{e}");
}

#[test]
fn truncated_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for (src, is_flownet) in [(fixture("vsrnet_zip.pth"), false), (flownet_checkpoint(), true)] {
        let bytes = std::fs::read(&src).unwrap();
        for cut in [1, 7, 64, 1000, 30_000, bytes.len() / 2, bytes.len() - 100, bytes.len() - 1] {
            let p = write(dir.path(), "cut.pth", &bytes[..cut]);
            let r = if is_flownet { flownet(&p).map(|_| ()) } else { vsrnet(&p).map(|_| ()) };
            let e = message(r.expect_err(&format!("{} cut at {cut} must fail", src.display())));
            assert!(e.contains("cut.pth"), "cut at {cut}: {e}");
        }
    }
}

#[test]
fn flipped_bytes_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // zip: every entry is CRC-checked, so a flip anywhere in the data is caught
    let zip = std::fs::read(fixture("vsrnet_zip.pth")).unwrap();
    for at in [0, 2, 200, 5_000, zip.len() / 2, zip.len() - 2_000] {
        let mut b = zip.clone();
        b[at] ^= 0x5a;
        let p = write(dir.path(), "flip.pth", &b);
        let e = message(vsrnet(&p).expect_err(&format!("zip flip at {at} must fail")));
        assert!(e.contains("flip.pth"), "flip at {at}: {e}");
    }
    // legacy: no checksums; flips in the header and in a tensor's name are caught
    let legacy = std::fs::read(flownet_checkpoint()).unwrap();
    let key = b"conv0.0.weight";
    let key_at = legacy.windows(key.len()).position(|w| w == key).expect("key in pickle") + key.len() - 1;
    for at in [0, 1, key_at] {
        let mut b = legacy.clone();
        b[at] ^= 0x01;
        let p = write(dir.path(), "flip.tar", &b);
        let e = message(flownet(&p).expect_err(&format!("legacy flip at {at} must fail")));
        assert!(e.contains("flip.tar"), "flip at {at}: {e}");
        if at == key_at {
            assert!(e.contains("missing tensors: conv0.0.weight") && e.contains("unexpected tensors: conv0.0.weighu"), "{e}");
        }
    }
}

#[test]
fn wrong_shape_missing_and_unexpected_tensors_are_all_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = checkpoint::read_state_dict(&fixture("vsrnet_zip.pth")).unwrap();

    let mut s = good.clone();
    s.insert("conv3.weight".into(), burn::tensor::TensorData::new(vec![0f32; 25], [1, 1, 5, 5]));
    let e = message(vsrnet(&write_state(dir.path(), "shape.safetensors", &s)).unwrap_err());
    assert!(e.contains("shape.safetensors") && e.contains("`conv3.weight` has shape [1, 1, 5, 5], expected [1, 32, 5, 5]"), "{e}");

    let mut s = good.clone();
    s.remove("conv2.1.running_var");
    s.remove("conv1.0.weight");
    s.insert("conv4.weight".into(), burn::tensor::TensorData::new(vec![0f32; 4], [4]));
    let e = message(vsrnet(&write_state(dir.path(), "keys.safetensors", &s)).unwrap_err());
    assert!(e.contains("missing tensors: conv1.0.weight, conv2.1.running_var"), "{e}");
    assert!(e.contains("unexpected tensors: conv4.weight"), "{e}");

    // a VSRNet dict is not a FlowNetSD checkpoint: every FlowNetSD tensor is missing
    let e = message(flownet(&fixture("vsrnet_zip.pth")).unwrap_err());
    assert!(e.contains("FlowNetSD") && e.contains("predict_flow2.weight"), "{e}");
}

#[test]
fn non_finite_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = checkpoint::read_state_dict(&fixture("vsrnet_zip.pth")).unwrap();
    s.insert("conv3.bias".into(), burn::tensor::TensorData::new(vec![f32::NAN], [1]));
    let e = message(vsrnet(&write_state(dir.path(), "nan.safetensors", &s)).unwrap_err());
    assert!(e.contains("nan.safetensors") && e.contains("conv3.bias") && e.contains("non-finite"), "{e}");
}

#[test]
fn burn_record_and_safetensors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let original = vsrnet(&fixture("vsrnet_zip.pth")).unwrap();
    let record = checkpoint::save_vsrnet(&original, &dir.path().join("net")).unwrap();
    assert_eq!(record.extension().unwrap(), "mpk");
    let exported = dir.path().join("net.safetensors");
    checkpoint::export_safetensors(&original, &exported).unwrap();
    let x = burn::tensor::Tensor::<Cpu, 5>::random([1, 3, 3, 64, 64], burn::tensor::Distribution::Uniform(0.0, 255.0), &device);
    let reference = original.forward(x.clone(), None).pred.into_data();
    for path in [record, exported] {
        let loaded = vsrnet(&path).unwrap();
        let pred = loaded.forward(x.clone(), None).pred.into_data();
        assert_eq!(pred, reference, "{} must reproduce the model bit for bit", path.display());
    }
    // the export uses PyTorch's names: it equals the original state dict
    let a = checkpoint::read_state_dict(&dir.path().join("net.safetensors")).unwrap();
    let b = checkpoint::read_state_dict(&fixture("vsrnet_zip.pth")).unwrap();
    let b: StateDict = b.into_iter().filter(|(k, _)| !k.ends_with("num_batches_tracked")).collect();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(v.clone().convert::<f32>(), b[k].clone().convert::<f32>(), "{k}");
    }
}
