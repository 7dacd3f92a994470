"""Time one training step at the defaults with and without the label critic, and with the critic on
part of each batch (``TrainConfig.critic_share``): 128 px, batch 8, five classes, bf16 U-Net.

    OMP_NUM_THREADS=1 python -m benchmarks.critic_step --repeats 3

Prints the median milliseconds of a step (corruptions, forward, backward, optimizer) after warm-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from maskaudit.critic import corrupt_batch
from maskaudit.models import QualityAwarenessModule, UNet
from maskaudit.train import TrainConfig, critic_positions, weighted_loss

BATCH, CLASSES, SIZE = 8, 5, 128


def step_seconds(unet, qam, optimizer, images, masks, *, critic: float, share: float, rng) -> float:
    """Seconds of one optimizer step of the joint objective."""
    channels_last = torch.channels_last
    config = TrainConfig(critic=critic, critic_share=share)
    started = time.perf_counter()
    corrupted = changed = rows = None
    if critic > 0:
        picked = critic_positions(len(masks), share, rng)
        corrupted, changed = corrupt_batch(masks.numpy()[picked] > 0.5, rng)
        corrupted = torch.from_numpy(corrupted).float().contiguous(memory_format=channels_last)
        changed = torch.from_numpy(changed)
        rows = None if len(picked) == len(masks) else torch.from_numpy(picked)
    loss = weighted_loss(unet, qam, images.contiguous(memory_format=channels_last),
                         masks.contiguous(memory_format=channels_last), config=config, amp_dtype=torch.bfloat16,
                         multilabel=True, corrupted=corrupted, changed=changed, critic_rows=rows)[0]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the three settings")
    parser.add_argument("--steps", type=int, default=12, help="steps per setting and round (2 are warm-up)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    unet = UNet(1, CLASSES, width=16).to(memory_format=torch.channels_last)
    qam = QualityAwarenessModule(1, CLASSES, width=8).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([*unet.parameters(), *qam.parameters()])
    images = torch.rand(BATCH, 1, SIZE, SIZE)
    masks = torch.zeros(BATCH, CLASSES, SIZE, SIZE)
    masks[:, :, 30:90, 20:60] = 1
    masks[:, 1, 40:100, 70:110] = 1
    rng = np.random.default_rng(0)
    for round_ in range(args.repeats):
        for critic, share in ((0.0, 1.0), (1.0, 1.0), (1.0, 0.5)):
            times = [step_seconds(unet, qam, optimizer, images, masks, critic=critic, share=share, rng=rng)
                     for _ in range(args.steps)]
            print(f"round {round_}: critic {critic:.0f}, share {share:.1f}: {1000 * np.median(times[2:]):.0f} ms per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
