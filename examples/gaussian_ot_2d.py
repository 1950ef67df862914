"""Transport a 2-D Gaussian sample onto another and walk the perception-distortion line.

Run: ``python examples/gaussian_ot_2d.py``. Prints the moments before and after the transport,
and how ``alpha`` moves the output from the target distribution (0) back to the input (1).
"""

import numpy as np

from latent_ot import GaussianOTTransformer


def main() -> None:
    rng = np.random.default_rng(0)
    source = rng.normal(size=(5000, 2)) @ [[1.0, 0.0], [0.8, 0.3]]
    target = rng.normal(size=(5000, 2)) @ [[2.0, 0.5], [0.0, 0.5]] + [3.0, -1.0]

    transport = GaussianOTTransformer().fit(source, target=target)
    moved = transport.transform(source)

    np.set_printoptions(precision=3, suppress=True)
    print("W2 distance between the fitted Gaussians:", round(transport.w2_, 4))
    print("target mean", target.mean(0), " transported mean", moved.mean(0))
    print("target covariance\n", np.cov(target.T), "\ntransported covariance\n", np.cov(moved.T))
    print("\nalpha   mean squared move   distance of the mean to the target's")
    for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
        out = transport.interpolate(alpha).transform(source)
        move = np.mean(np.sum((out - source) ** 2, axis=1))
        print(f"{alpha:5.2f}   {move:19.4f}   {np.linalg.norm(out.mean(0) - target.mean(0)):.4f}")


if __name__ == "__main__":
    main()
