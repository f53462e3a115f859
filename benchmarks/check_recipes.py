"""Do the paper profile's recipes train networks worth studying? (issue 16; a developer script.)

    OMP_NUM_THREADS=1 STABNB_OFFLINE_DATA=/work/shared/data \\
        .venv/bin/python benchmarks/check_recipes.py mnist
    .venv/bin/python benchmarks/check_recipes.py cifar10 --models resnet --train-size 2000 \\
        --eval-size 1000 --epochs 2
    .venv/bin/python benchmarks/check_recipes.py mnist --models cnn --set lr=0.1 --set augment=translate

Trains each model of ``regularisation_config(dataset, "paper")`` (sizes overridable) exactly as
a study's baseline cell of ``--seed`` (default 0) would (the same data, initial weights, minibatch order and
per-model recipe), without a regulariser, and prints its test accuracy after every epoch and
its wall time. Targets: MNIST MLP ≥ 98 %, MNIST CNN ≥ 99 %, CIFAR-10 ResNet ≥ 90 % (full data).
``--set field=value`` replaces a TrainConfig field for every model (to try a variant).
"""

import argparse
import ast
import time
from dataclasses import replace

from stabnb.presets import regularisation_config
from stabnb.study.cell import _build, load_study_data, stream_seed
from stabnb.study.config import Cell
from stabnb.train import train


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=("mnist", "cifar10", "cifar100"))
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-size", type=int, default=None, help="0: all")
    parser.add_argument("--eval-size", type=int, default=None, help="0: all")
    parser.add_argument("--seed", type=int, default=0, help="the study seed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    config = regularisation_config(args.dataset, "paper", seed=args.seed, num_seeds=1,
                                   regularizers=(),
                                   models=tuple(args.models) if args.models else None,
                                   epochs=args.epochs, train_size=args.train_size,
                                   eval_size=args.eval_size)
    changes = dict(item.split("=", 1) for item in args.set)
    data = load_study_data(config, seed=args.seed)
    print(f"{args.dataset}: {len(data.train_x)} training, {len(data.test_x)} test images")
    for name in config.models:
        cfg = replace(config.train_config(stream_seed(args.seed, "order"), name, device=args.device,
                                          progress=False),
                      **{k: _value(v) for k, v in changes.items()})
        model = _build(config, data, Cell(name, "none", 0.0, args.seed))
        started = time.perf_counter()
        result = train(model, data.train_x, data.train_y, cfg, eval_x=data.test_x,
                       eval_y=data.test_y)
        wall = time.perf_counter() - started
        print(f"{name} ({config.models[name].architecture}): "
              f"{ {k: v for k, v in cfg.to_dict().items() if k not in ('seed', 'progress')} }")
        for row in result.history:
            print(f"  epoch {row['epoch']}: loss {row['loss']:.4f}, train accuracy "
                  f"{row['train_accuracy']:.4f}, test accuracy {row['eval_accuracy']:.4f}")
        print(f"  {name}: test accuracy {result.eval_accuracy:.4f}, wall time {wall:.1f} s "
              f"on {result.device} (training {result.wall_time:.1f} s)", flush=True)
