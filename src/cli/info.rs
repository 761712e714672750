//! `vsr info`: what this build can run on.

use crate::backend::BackendKind;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let backends: Vec<serde_json::Value> = BackendKind::ALL
        .iter()
        .map(|&k| {
            let (usable, detail) = probe(k);
            serde_json::json!({"backend": k.name(), "compiled": k.compiled(), "usable": usable, "detail": detail})
        })
        .collect();
    let info = serde_json::json!({
        "vsr": env!("CARGO_PKG_VERSION"),
        "burn": "0.21.0",
        "cubecl": "0.10.0",
        "ffmpeg": ffmpeg_version(),
        "backends": backends,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("vsr {} (burn {}, cubecl {}, ffmpeg {})", info["vsr"], info["burn"], info["cubecl"], info["ffmpeg"]);
    println!("{:<6} {:<9} {:<7} detail", "backend", "compiled", "usable");
    for b in &backends {
        println!(
            "{:<7} {:<9} {:<7} {}",
            b["backend"].as_str().unwrap_or(""),
            b["compiled"],
            b["usable"],
            b["detail"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn probe(kind: BackendKind) -> (bool, String) {
    if !kind.compiled() {
        return (false, "not compiled in (cargo feature)".into());
    }
    match kind {
        BackendKind::Cpu => (true, format!("{} threads", std::thread::available_parallelism().map_or(1, |n| n.get()))),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => match crate::backend::cuda_device_count() {
            Ok(n) => (true, format!("{n} CUDA device(s)")),
            Err(e) => (false, e),
        },
        #[cfg(feature = "tch")]
        BackendKind::Tch => (true, crate::backend::tch_summary()),
        _ => (true, "compiled in; devices are probed at first use".into()),
    }
}

fn ffmpeg_version() -> String {
    #[cfg(feature = "video")]
    {
        let v = video_rs::ffmpeg::util::version();
        format!("libavutil {}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
    }
    #[cfg(not(feature = "video"))]
    {
        "not compiled in".to_string()
    }
}
