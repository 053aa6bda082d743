"""Run by test_train_ddp.py under torchrun: one htc.train run, then every rank saves
its parameters and the loss terms it computed itself, for the test to compare."""

import json
import sys
from pathlib import Path

import torch

from htc import dist as dist_mod
from htc import train
from htc.model.detector import HTC

torch.set_num_threads(1)


def main() -> int:
    out = Path(sys.argv[1])
    args = train.build_parser().parse_args(sys.argv[2:])
    local_losses = []
    real_loss = HTC.loss

    def loss(self, images, targets):
        losses = real_loss(self, images, targets)
        local_losses.append({k: v.item() for k, v in losses.items()})
        return losses

    HTC.loss = loss
    env = dist_mod.setup(args.device)
    try:
        result = train.train(args, env)
        params = {k: v.detach().clone() for k, v in result.model.named_parameters()}
        torch.save(params, out / f"rank{env.rank}.pt")
        (out / f"rank{env.rank}.json").write_text(json.dumps({"world_size": env.world_size, "losses": local_losses}))
    finally:
        dist_mod.cleanup(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
