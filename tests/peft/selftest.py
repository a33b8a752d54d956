"""Does check_peft.py pass a correct export and fail broken ones? Without bella: the "export"
is faked from the adapters PEFT itself saved in a fixture directory (fixture.py), and the
"prediction" is the fixture's PeftModel logits (f32) with ensemble statistics from torch.

usage: selftest.py FIXTURE_DIR WORK_DIR

For the ReLU model (names 0, 2, 4; 3 particles) and the GELU one (names net.0, net.2, net.4;
2 particles): the fake export must pass; then each planted fault, one at a time on a fresh
copy, must fail with a message containing the expected words, and must fail too when the
checker is not told the run's settings (--base, --particles, --r, --alpha, --targets). Exit 1
otherwise.
"""
import json
import os
import shutil
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_peft  # noqa: E402

P = "base_model.model."


def fake_export(src, out):
    """base.safetensors + peft_k -> particle_k, and pred.safetensors from PEFT's logits."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    shutil.copy(os.path.join(src, "base.safetensors"), out)
    k = 0
    while os.path.isdir(os.path.join(src, f"peft_{k}")):
        shutil.copytree(os.path.join(src, f"peft_{k}"), os.path.join(out, f"particle_{k}"))
        k += 1
    z = load_file(os.path.join(src, "peft_logits.safetensors"))["logits"]
    write_pred(os.path.join(out, "pred.safetensors"), z)
    return k


def write_pred(path, z, stats_from=None):
    zz = (z if stats_from is None else stats_from).double()
    lp = torch.log_softmax(zz, -1)
    p = lp.exp()
    probs = p.mean(0)
    ent = -(probs * probs.log()).sum(-1)
    exp_ent = (-(p * lp).sum(-1)).mean(0)
    save_file(
        {
            "logits": z.float().contiguous(),
            "probs": probs.float(),
            "entropy": ent.float(),
            "expected_entropy": exp_ent.float(),
            "mutual_info": (ent - exp_ent).float(),
        },
        path,
    )


def edit_tensors(path, fn):
    t = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    t = fn(t)
    save_file({k: v.contiguous() for k, v in t.items()}, path, metadata=meta)


def edit_config(pdir, fn):
    p = os.path.join(pdir, "adapter_config.json")
    with open(p) as f:
        c = json.load(f)
    fn(c)
    with open(p, "w") as f:
        json.dump(c, f)


def adapter(d, k=1):
    return os.path.join(d, f"particle_{k}", "adapter_model.safetensors")


def nudge(t, key, rel):
    t[key] = t[key].clone()
    t[key].view(-1)[0] += rel * t[key].abs().max()
    return t


def faults(first, last, act):
    """(name, what the message must contain, mutation of an export dir)."""
    a = f"{P}{first}.lora_A.weight"
    b = f"{P}{first}.lora_B.weight"
    bl = f"{P}{last}.lora_B.weight"

    def rename(t, old, new):
        t[new] = t.pop(old)
        return t

    def pred_edit(d, fn):
        p = os.path.join(d, "pred.safetensors")
        t = load_file(p)
        fn(t)
        save_file(t, p)

    def swap_particles(t):
        t["logits"] = t["logits"][[1, 0] + list(range(2, t["logits"].shape[0]))].contiguous()

    other_act = "relu" if act == "gelu" else "gelu"
    return [
        ("one last-layer lora_B weight off by 1e-3 of its max", "logits",
         lambda d: edit_tensors(adapter(d), lambda t: nudge(t, bl, 1e-3))),
        ("one first-layer lora_A weight off by 1e-2 of its max, last particle", "logits",
         lambda d: edit_tensors(adapter(d, len([e for e in os.listdir(d) if e.startswith("particle_")]) - 1),
                                lambda t: nudge(t, a, 1e-2))),
        ("keys without the base_model.model. prefix", "keys",
         lambda d: edit_tensors(adapter(d), lambda t: {k[len(P):]: v for k, v in t.items()})),
        ("a key with PEFT's in-memory adapter name (.default.)", "keys",
         lambda d: edit_tensors(adapter(d), lambda t: rename(t, b, b.replace(".lora_B.", ".lora_B.default.")))),
        ("lora_A stored transposed [I, r]", "shape",
         lambda d: edit_tensors(adapter(d), lambda t: {**t, a: t[a].T.contiguous()})),
        ("lora_A and lora_B of a layer swapped", "shape",
         lambda d: edit_tensors(adapter(d), lambda t: {**t, a: t[b], b: t[a]})),
        ("a layer's tensors missing", "keys",
         lambda d: edit_tensors(adapter(d), lambda t: {k: v for k, v in t.items() if f"{P}{last}." not in k})),
        ("target_modules leaves out a layer that has tensors", "target_modules",
         lambda d: edit_config(os.path.join(d, "particle_1"),
                               lambda c: c.__setitem__("target_modules", [m for m in c["target_modules"] if m != last]))),
        ("target_modules names a layer that is not in the base", "not layers",
         lambda d: edit_config(os.path.join(d, "particle_1"),
                               lambda c: c["target_modules"].append("99"))),
        ("target_modules a string (a regex to PEFT)", "list of layer names",
         lambda d: edit_config(os.path.join(d, "particle_1"), lambda c: c.__setitem__("target_modules", first))),
        ("lora_alpha doubled in the config", "logits",
         lambda d: edit_config(os.path.join(d, "particle_1"), lambda c: c.__setitem__("lora_alpha", 2 * c["lora_alpha"]))),
        ("r in the config not the tensors' rank", "shape",
         lambda d: edit_config(os.path.join(d, "particle_1"), lambda c: c.__setitem__("r", c["r"] + 1))),
        ("use_rslora on", "use_rslora",
         lambda d: edit_config(os.path.join(d, "particle_1"), lambda c: c.__setitem__("use_rslora", True))),
        ("a config field PEFT does not know", "does not know",
         lambda d: edit_config(os.path.join(d, "particle_1"), lambda c: c.__setitem__("bella_method", "svgd"))),
        ("bias 'all' in the config", "bias",
         lambda d: edit_config(os.path.join(d, "particle_1"), lambda c: c.__setitem__("bias", "all"))),
        ("no adapter_config.json", "adapter_config.json is missing",
         lambda d: os.remove(os.path.join(d, "particle_1", "adapter_config.json"))),
        ("adapters stored as f16", "float16",
         lambda d: edit_tensors(adapter(d), lambda t: {k: v.half() for k, v in t.items()})),
        ("particle_0 directory missing", "particle directories",
         lambda d: shutil.rmtree(os.path.join(d, "particle_0"))),
        ("one base bias changed", "differs from the original base",
         lambda d: edit_tensors(os.path.join(d, "base.safetensors"),
                                lambda t: nudge(t, f"{last}.bias", 1e-3))),
        ("base without activation metadata", "activation",
         lambda d: save_file(load_file(os.path.join(d, "base.safetensors")), os.path.join(d, "base.safetensors"))),
        (f"base says {other_act}", "activation",
         lambda d: save_file(load_file(os.path.join(d, "base.safetensors")), os.path.join(d, "base.safetensors"),
                             metadata={"activation": other_act})),
        ("PRED logits of particles 0 and 1 swapped", "logits",
         lambda d: pred_edit(d, swap_particles)),
        ("PRED mutual_info off by 1e-4", "mutual_info",
         lambda d: pred_edit(d, lambda t: t["mutual_info"].add_(1e-4))),
        ("PRED entropy in bits", "entropy",
         lambda d: pred_edit(d, lambda t: t["entropy"].div_(torch.log(torch.tensor(2.0))))),
        ("PRED probs of particle 0 alone", "probs",
         lambda d: pred_edit(d, lambda t: t.__setitem__("probs", torch.softmax(t["logits"][0].double(), -1).float()))),
        ("PRED expected_entropy of the mean (= entropy)", "expected_entropy",
         lambda d: pred_edit(d, lambda t: t.__setitem__("expected_entropy", t["entropy"].clone()))),
        ("PRED logits in f64", "f32",
         lambda d: pred_edit(d, lambda t: t.__setitem__("logits", t["logits"].double()))),
        ("PRED without probs", "no tensor `probs`",
         lambda d: pred_edit(d, lambda t: t.pop("probs"))),
    ]


def main():
    fixture, work = sys.argv[1], sys.argv[2]
    problems = []
    cases = [
        (fixture, "relu", "0", "4", ["0", "2", "4"]),
        (os.path.join(fixture, "gelu"), "gelu", "net.0", "net.4", ["net.0", "net.2", "net.4"]),
    ]
    for src, act, first, last, targets in cases:
        good = os.path.join(work, f"good_{act}")
        k = fake_export(src, good)
        x = os.path.join(fixture, "x.safetensors")

        def argv(d):
            return [d, x, os.path.join(d, "pred.safetensors"), "--base", os.path.join(src, "base.safetensors"),
                    "--particles", str(k), "--r", "4", "--alpha", "8", "--targets", ",".join(targets)]

        print(f"== {act}: the fake export of PEFT's own adapters")
        f = check_peft.run(argv(good))
        if f:
            problems.append(f"{act}: the correct fake export fails: {f}")
        for name, words, mutate in faults(first, last, act):
            d = os.path.join(work, "bad")
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(good, d)
            mutate(d)
            print(f"== {act}: planted: {name}")
            f = check_peft.run(argv(d))
            if not f:
                problems.append(f"{act}: planted fault not caught: {name}")
            elif not any(words in m for m in f):
                problems.append(f"{act}: planted fault `{name}` caught, but no message mentions `{words}`: {f}")
            # Caught by what the export itself says too, without the run's --base/--r/... .
            if not check_peft.run(argv(d)[:3]):
                problems.append(f"{act}: planted fault not caught without the run's expectations: {name}")
    print()
    for p in problems:
        print(f"selftest: FAIL: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("selftest: the checker passes correct exports and catches every planted fault")


if __name__ == "__main__":
    main()
