"""Image quality metrics: distortion, perceptual quality and the latent W2 distance.

Distortion, between each image and its reference (pairs may differ in size from pair to pair):

- `psnr` and `ssim`, computed by torchmetrics;
- `lpips`, with torchmetrics' LPIPS networks or with any network you bring.

Perceptual quality, between the distributions of two image sets (unpaired):

- `fid`, `kid` and `inception_score`, computed by torchmetrics on features of any network;
- `patch_fid`: FID over many crops per image, which makes FID meaningful on a dozen images;
- `latent_w2`: the W2 distance between the Gaussians of latent patches that the transport of
  this package fits, i.e. what it minimises.

`evaluate` computes a table of several of them at once; an `Evaluator` measures the
references once for several image sets (a sweep of alphas).

Images are anything `latent_ot.images.ImageSource` accepts: a ``N x 3 x H x W`` float tensor in
[0, 1], a list of ``3 x H x W`` tensors of different sizes, PIL images, numpy arrays, paths,
a directory. Every metric reads pixels in [0, 1]: PSNR's peak is 1 (the same as 255 on uint8
pixels), and the networks receive ``N x 3 x H x W`` float batches in [0, 1].

Networks
--------
The default networks are those of the papers, through torchmetrics: Inception-v3 with the
FID weights (needs ``torch-fidelity``) for FID, KID and IS, and AlexNet LPIPS (needs
``torchvision``); the ``metrics`` extra installs both: ``pip install "latent-ot[metrics]"``.
They download their weights on first use. Every metric also takes a
network of your own instead, which is how the tests run without a network connection:

- ``feature_extractor`` (FID, KID, patch FID): ``N x 3 x H x W -> N x d`` features;
- ``classifier`` (IS): ``N x 3 x H x W -> N x n_classes`` logits;
- ``net`` (LPIPS): ``N x 3 x H x W ->`` a list of feature maps ``N x C_k x h_k x w_k``.

A network of your own runs as it is (put it in evaluation mode with ``.eval()``), on the
device of its parameters (the CPU if it has none), and sees its input in [0, 1]: normalise
inside it if it expects another range. The default
networks run on ``device``. Same-size images are batched together, ``batch_size`` at a time.
"""

from .artifacts import latent_grid_score
from .distortion import lpips, psnr, ssim
from .distribution import fid, inception_score, kid, patch_fid
from .evaluate import DEFAULT_METRICS as _DEFAULT_METRICS
from .evaluate import METRICS as _METRICS
from .evaluate import Evaluator, evaluate
from .latent import DEFAULT_LATENT_PATCH_SIZE, latent_w2, latent_w2_label

__all__ = [
    "DEFAULT_LATENT_PATCH_SIZE",
    "DEFAULT_METRICS",
    "METRICS",
    "Evaluator",
    "evaluate",
    "fid",
    "inception_score",
    "kid",
    "latent_grid_score",
    "latent_w2",
    "latent_w2_label",
    "lpips",
    "patch_fid",
    "psnr",
    "ssim",
]

# Bound here again so that the API reference, which reads this module, shows their docstrings.
METRICS = _METRICS
"""Every metric name `evaluate` knows."""

DEFAULT_METRICS = _DEFAULT_METRICS
"""What `evaluate` computes when no metrics are named (plus ``latent_w2`` given an autoencoder)."""
