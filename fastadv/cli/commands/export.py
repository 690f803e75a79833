"""``fastadv export``: a run's model as a RobustBench-style state_dict (.pt) or .safetensors file."""
from __future__ import annotations

NAME = "export"
HELP = "export a run's model for RobustBench / AutoAttack (.pt state_dict) or as .safetensors"
ORDER = 25


def configure(parser) -> None:
    parser.description = (
        "Write a run's model as a plain state_dict that loads with torch.load(weights_only=True) into "
        "fastadv.models.build_model(...) (format robustbench, .pt), or as .safetensors. Normalization is inside "
        "the model, inputs are [0,1] images. Prints the lines that load it and writes them to OUT.json; the "
        "robustbench format also writes OUT's stem + .model_info.json: dataset, threat model, eps, architecture "
        "and the line that rebuilds it, clean and AutoAttack accuracy (from summary.json and eval.json, with "
        "their attacks and points), the training data and the versions.")
    parser.epilog = "Example: fastadv export runs/demo-mnist --format robustbench demo-mnist.pt"
    parser.add_argument("path", metavar="RUN_DIR_OR_WEIGHTS")
    parser.add_argument("output", metavar="OUT", help="output file: .pt (robustbench) or .safetensors")
    parser.add_argument("--format", default=None, help="robustbench | safetensors [default: from OUT's suffix]")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def run(args) -> int:
    from fastadv.models.export import export_checkpoint

    record = export_checkpoint(args.path, args.output, args.format, overwrite=args.force)
    print(f"wrote {args.output} ({record['format']}: {record['arch']['model']} state_dict, "
          f"normalization inside, [0,1] inputs) and {args.output}.json")
    if "model_info" in record:
        print(f"model info (RobustBench fields, accuracies with their attacks and points, training data): "
              f"{record['model_info']}")
    print("load it with:\n")
    print("\n".join("    " + line for line in record["load"].splitlines()))
    return 0
