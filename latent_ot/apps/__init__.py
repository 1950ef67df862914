"""Applications above the library: what the CLI, the examples and the benchmarks share.

- `latent_ot.apps.restoration`: clean photos degraded and restored classically (noise and
  non-local means, bicubic super-resolution, JPEG), the restored images the demo, the examples
  and the quality benchmark transport;
- `latent_ot.apps.demo_data`: the sample photos of ``latent-ot demo``;
- `latent_ot.apps.reports`: tables (CSV, markdown), the perception-distortion curve, collages.

The library (estimators, pipeline, patches, autoencoders, images, metrics, priors) never
imports from here. Several of these need optional packages (scikit-image, matplotlib): the
``demo`` extra installs them, and a missing one raises an error that names it.
"""
