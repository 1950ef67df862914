"""The image measurements of ``bench.py``: one autoencoder, one size, one kind of measurement
per call (a child process on the CPU), and the folder throughput; timing and memory helpers."""

from __future__ import annotations

import os
import resource
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

# The configuration of stabilityai/sd-vae-ft-mse, randomly initialised: same cost, no download.
SD_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
}

# The folder case's photos: every image of Set5, Set14 and CBSD68 (228 to 720 px), then the
# first of the large Wikipedia photos (about 1300 x 860 px) up to the count asked.
FOLDER_SETS = ("Set5", "Set14", "CBSD68", "wikipedia-photos")


def build_autoencoder(name: str, device: str, dtype: str | None, shared: str):
    import torch
    from diffusers import AutoencoderKL

    from latent_ot.autoencoders import load_autoencoder

    if name == "taef2":
        vae = Path(shared) / "weights" / "taef2"
    else:
        torch.manual_seed(0)
        vae = AutoencoderKL(**SD_VAE_CONFIG).eval()
    return load_autoencoder(vae, device=device, dtype=dtype)


def timed(function, repeats: int) -> float:
    """Best of ``repeats`` wall-clock seconds, after a warm-up call."""
    return interleaved({"function": function}, repeats)["function"]


def interleaved(functions: dict, repeats: int) -> dict:
    """Best wall-clock seconds of each function, run in turn ``repeats`` times after a warm-up.

    Taking turns puts the numbers of a ratio in the same process at the same moment: on a
    shared machine, run-to-run noise (10 to 20 % on a 2-core VM) would swamp a 1 %
    difference. The warm-up round pays each shape's one-off setup (kernel choice, allocator
    growth). A function that returns a float has timed itself (leaving out its own setup).
    """
    for function in functions.values():
        function()
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            synchronize()
            start = time.perf_counter()
            own = function()
            synchronize()
            seconds = own if isinstance(own, float) else time.perf_counter() - start
            best[name] = min(best[name], seconds)
    return best


def synchronize() -> None:
    """Wait for the GPU, if any, so that wall-clock times include its work."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_image_case(case: dict) -> dict:
    """One autoencoder, one size, one kind of measurement; runs in a child process."""
    import torch

    from latent_ot.memory import keep_freed_cpu_memory

    if case["keep_freed_memory"]:
        keep_freed_cpu_memory()
    torch.manual_seed(0)
    device = case["device"]
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    autoencoder = build_autoencoder(case["autoencoder"], device, case["dtype"], case["shared"])
    if case["what"] == "folder":
        result = folder_case(case, autoencoder)
    else:
        image = torch.rand(1, 3, case["size"], case["size"], device=device)
        measure = {
            "floor": floor_case,
            "transform": transform_case,
            "fit": fit_case,
            "memory": memory_case,
        }[case["what"]]
        result = measure(case, autoencoder, image)
    result["peak_memory_gb"] = peak_memory_gb(device)
    return result


def floor_case(case: dict, autoencoder, image) -> dict:
    """One encode + decode, for the peak memory of the floor."""
    from latent_ot.memory import reusing_freed_memory

    # The floor gets what fit and transform get: on the CPU, memory that one autoencoder pass
    # frees is reused by the next (encode, then decode; batch after batch).
    with reusing_freed_memory(autoencoder):
        autoencoder.decode(autoencoder.encode(image))
    return {}


def fitted_operator(case: dict, autoencoder, size: int, **options):
    import torch

    from latent_ot import LatentOTTransformer

    operator = LatentOTTransformer(
        vae=autoencoder, device=case["device"], dtype=autoencoder.dtype, random_state=0, **options
    )
    fit_images = [torch.rand(3, size, size) for _ in range(2)]
    return operator.fit(fit_images, [pixels**2 for pixels in fit_images])


def transform_case(case: dict, autoencoder, image) -> dict:
    """Plain pass, encode + decode, transform with and without the memory policy, in turns."""
    import torch

    size = case["size"]
    operator = fitted_operator(case, autoencoder, size, batch_size=case["batch_size"])
    pixels = image[0].cpu()
    splits = []

    def encode_then_decode():
        from latent_ot.memory import reusing_freed_memory

        start = time.perf_counter()
        with reusing_freed_memory(autoencoder):
            latents = autoencoder.encode(image)
            synchronize()
            middle = time.perf_counter()
            autoencoder.decode(latents)
            synchronize()
        splits.append((middle - start, time.perf_counter() - middle))

    def without_reuse():
        with reuse_declined():
            operator.transform(pixels)

    # One function for the floor, as transform is one: the sum of the best encode and the
    # best decode of different rounds would be lower than any real encode + decode.
    functions = {
        "plain": plain_pass_of(autoencoder, image),
        "floor": encode_then_decode,
        "transform": lambda: operator.transform(pixels),
        "transform_no_reuse": without_reuse,
    }
    best = interleaved(functions, case["repeats"])
    encode_s, decode_s = min(splits[1:], key=sum)  # [0]: the warm-up round's
    result = {"encode_s": encode_s, "decode_s": decode_s, "plain_s": best["plain"]}
    result["transform_s"] = best["transform"]
    result["transform_no_reuse_s"] = best["transform_no_reuse"]
    batch = [torch.rand(3, size, size) for _ in range(case["n_images"])]
    if len(batch) > 1:
        seconds = timed(lambda: operator.transform(batch), case["repeats"])
        result["transform_images_per_s"] = len(batch) / seconds
    else:
        result["transform_images_per_s"] = 1 / result["transform_s"]
    return result


def plain_pass_of(autoencoder, image):
    """The encode + decode a user would write by hand, and its own timing: the published
    modules in eval mode, contiguous float32, ``torch.inference_mode()``; no memory policy,
    no checks, no tiling, none of latent-ot's changes to the modules (channels-last layout,
    TAESD's ReLUs in place)."""
    import copy

    import torch

    if hasattr(autoencoder, "encoder"):  # the TAESD family: a copy of the published modules
        parts = [copy.deepcopy(autoencoder.encoder), copy.deepcopy(autoencoder.decoder)]
        for part in parts:
            part.to(memory_format=torch.contiguous_format).eval()
            for module in part.modules():
                if isinstance(module, torch.nn.ReLU):
                    module.inplace = False
        encoder, decoder = parts
        layouts = {}
    else:  # diffusers' AutoencoderKL, laid out contiguous for the pass (not timed) and back
        model = autoencoder.model

        def encoder(images):
            return model.encode(images * 2 - 1).latent_dist.mean

        def decoder(latents):
            return model.decode(latents).sample

        layouts = {"during": "contiguous", "after": autoencoder.memory_format}

    def plain_pass() -> float:
        if layouts:
            autoencoder.set_memory_format(layouts["during"])
        try:
            with torch.inference_mode():
                synchronize()
                start = time.perf_counter()
                decoder(encoder(image))
                synchronize()
                return time.perf_counter() - start
        finally:
            if layouts:
                autoencoder.set_memory_format(layouts["after"])

    return plain_pass


@contextmanager
def reuse_declined():
    """The block runs with latent-ot's memory policy turned off, as its variable does."""
    from latent_ot.memory import REUSE_ENV

    before = os.environ.get(REUSE_ENV)
    os.environ[REUSE_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[REUSE_ENV]
        else:
            os.environ[REUSE_ENV] = before


def fit_case(case: dict, autoencoder, image) -> dict:
    """Fit throughput against a plain encode of the same batches, in turns."""
    import torch

    from latent_ot import LatentOTTransformer

    size, device = case["size"], case["device"]
    images = [torch.rand(3, size, size) for _ in range(case["n_images"])]
    batch = case["batch_size"]
    operator = LatentOTTransformer(
        vae=autoencoder, device=device, dtype=autoencoder.dtype, batch_size=batch
    )
    batches = [torch.stack(images[i : i + batch]) for i in range(0, len(images), batch)]
    functions = {
        "fit": lambda: operator.fit(images, images),
        "encode": lambda: encode_all(autoencoder, batches * 2, device),
    }
    seconds = interleaved(functions, case["repeats"])
    return {
        "fit_images_per_s": 2 * len(images) / seconds["fit"],
        "encode_images_per_s": 2 * len(images) / seconds["encode"],
    }


def memory_case(case: dict, autoencoder, image) -> dict:
    """The peak of one transform alone above what the process held, tiled or in one pass."""
    # The statistics do not depend on the image size, so the fit runs on small images; then
    # the peak is reset to what is held now.
    operator = fitted_operator(case, autoencoder, 256, tile_size=case["tile_size"])
    held = reset_peak_memory(case["device"])
    operator.transform(image[0].cpu())
    return {"above_model_gb": peak_memory_gb(case["device"]) - held}


def encode_all(autoencoder, batches: list, device: str) -> None:
    """A plain encode of every batch, in one block of memory reuse as ``fit`` has."""
    from latent_ot.memory import reusing_freed_memory

    with reusing_freed_memory(autoencoder):
        for batch in batches:
            autoencoder.encode(batch.to(device))


def folder_photos(shared: str, count: int) -> list[Path]:
    """``count`` photos of mixed sizes from ``shared/images`` (see :data:`FOLDER_SETS`)."""
    photos = []
    for name in FOLDER_SETS:
        photos += sorted((Path(shared) / "images" / name).glob("*.png"))
    if len(photos) < count:
        raise ValueError(f"only {len(photos)} photos in {shared}/images, {count} asked")
    return photos[:count]


def folder_case(case: dict, autoencoder) -> dict:
    """``transform_files`` over photos on disk to files on disk, with reads and writes
    overlapped and in turn, against the autoencoder alone on the same images in memory; the
    passes take turns every ``chunk`` photos (10), all in one block of memory reuse, as
    ``latent-ot transform`` runs its files."""
    from latent_ot.images import ImageSource, transform_files
    from latent_ot.pipeline import pad_to_multiple

    files = folder_photos(case["shared"], case["n_images"])
    operator = fitted_operator(case, autoencoder, 256)
    # What transform encodes: each photo's pixels, reflect-padded to the autoencoder's factor.
    images = [
        pad_to_multiple(item.pixels[None], autoencoder.factor).to(case["device"])
        for item in ImageSource(files, prefetch=0)
    ]
    pixels = sum(image.shape[-2] * image.shape[-1] for image in images)

    def alone(chunk: slice) -> None:
        for image in images[chunk]:
            autoencoder.decode(autoencoder.encode(image))

    def folder(chunk: slice, prefetch: int) -> None:
        with tempfile.TemporaryDirectory(dir=case.get("output_root")) as output:
            report = transform_files(operator.transform, files[chunk], output, prefetch=prefetch)
        if not report.ok:
            raise RuntimeError(f"transform_files failed: {report.failed[:3]}")

    functions = {
        "alone": alone,
        "overlapped": lambda chunk: folder(chunk, 2),
        "in_turn": lambda chunk: folder(chunk, 0),
    }
    seconds = dict.fromkeys(functions, 0.0)
    size = case.get("chunk", 10)
    with operator.reusing_freed_memory():
        for function in functions.values():  # warm-up: a few photos
            function(slice(0, 3))
        # In turns chunk by chunk, each pass over every photo once: on a shared machine whose
        # load changes over minutes, the passes then see the same load.
        for turn, start in enumerate(range(0, len(images), size)):
            names = list(functions)
            names = names[turn % len(names) :] + names[: turn % len(names)]  # none always first
            for name in names:
                begin = time.perf_counter()
                functions[name](slice(start, start + size))
                seconds[name] += time.perf_counter() - begin
    result = {f"{name}_images_per_s": len(images) / seconds[name] for name in functions}
    result["megapixels"] = pixels / 1e6
    return result


def peak_memory_gb(device: str) -> float:
    """Peak since the start of the case or the last :func:`reset_peak_memory`, in GB."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9  # reset at the start of each case
    if Path("/proc/self/status").exists():
        return _process_status_kb("VmHWM") / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def reset_peak_memory(device: str) -> float:
    """Reset the peak to the memory held now, and return that, in GB."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 1e9
    # Writing 5 to clear_refs resets the process's peak resident set size (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")
    return _process_status_kb("VmRSS") / 1e6


def _process_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")
