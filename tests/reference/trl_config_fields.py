"""
The keyword arguments TRL's config classes (and PEFT's LoraConfig) accept, read from their source
with `ast` (no trl, peft or torch needed), for tests/fixtures/trl/config_fields.json.

    python3 tests/reference/trl_config_fields.py TRL_CHECKOUT PEFT_CHECKOUT

prints {class: [field, ...]} for SFTConfig, DPOConfig, KTOConfig, ORPOConfig, CPOConfig,
GRPOConfig (each with _BaseConfig's overrides, without TrainingArguments' fields, which the
fixture lists on their own) and LoraConfig (with PeftConfig's fields). A dataclass field is an
annotated class attribute whose name does not start with "_".
"""
import ast
import json
import sys
from pathlib import Path


def dataclass_fields(path: Path, class_name: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return [
                stmt.target.id
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and not stmt.target.id.startswith("_")
            ]
    raise SystemExit(f"{path}: no class {class_name}")


def main() -> None:
    trl, peft = Path(sys.argv[1]), Path(sys.argv[2])
    base = dataclass_fields(trl / "trl/trainer/base_config.py", "_BaseConfig")
    configs = {
        "SFTConfig": trl / "trl/trainer/sft_config.py",
        "DPOConfig": trl / "trl/trainer/dpo_config.py",
        "KTOConfig": trl / "trl/trainer/kto_config.py",
        "GRPOConfig": trl / "trl/trainer/grpo_config.py",
        # TRL 1.x keeps ORPO and CPO under trl.experimental.
        "ORPOConfig": trl / "trl/experimental/orpo/orpo_config.py",
        "CPOConfig": trl / "trl/experimental/cpo/cpo_config.py",
    }
    out = {name: sorted(set(base) | set(dataclass_fields(path, name))) for name, path in configs.items()}
    peft_config = dataclass_fields(peft / "src/peft/config.py", "PeftConfig") + dataclass_fields(peft / "src/peft/config.py", "PeftConfigMixin")
    out["LoraConfig"] = sorted(set(peft_config) | set(dataclass_fields(peft / "src/peft/tuners/lora/config.py", "LoraConfig")))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
