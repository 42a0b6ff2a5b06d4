"""Times the reference FreeDoM and research Z-Magic guided steps on the CPU, for side-by-side runs with ZMagic's
`compare` benchmark (see run-side-by-side.sh and docs/performance.md).

The step functions are the research code's own, run unmodified from a checkout of HolmesShuan/FreeDoM (Face-GD;
nothing of it is copied here): arcface_land_ddim_diffusion (FreeDoM, 2 conditions: 1 forward + 1 backward),
arcface_land_ddim_diffusion_magic (Z-Magic, 2 conditions, per-channel CAGrad with SciPy: 2 forwards + 3 backwards),
clip_parse_id_ddim_diffusion (FreeDoM, 3 conditions: 2 + 2) and clip_parse_id_ddim_diffusion_magic (Z-Magic,
3 conditions: 4 + 6). Only the surroundings are replaced so that they run on a CPU without the encoders' weights:
- the encoders (IDLoss, FaceLandMarkTool, CLIPEncoder, FaceParseTool) become toy energies with the same cost
  profile as ZMagic's ToyCondition (4x average pool, residual to a fixed random target; the step takes its L2 norm);
- `.to('cuda')` is redirected to the CPU;
- the CelebA-HQ DDPM (models/diffusion.py Model, the SDEdit configuration, 113,673,219 parameters) gets PyTorch's
  default random initialisation (weights do not change the cost).
Model parameters keep requires_grad=True as in the research runner; the case 'freedom2_frozen' repeats the FreeDoM
step with frozen parameters (ZMagic never computes parameter gradients).

Usage: python3 time_reference.py FACE_GD_DIR [threads=2] [timed_steps=2] [cases=freedom2,magic2,freedom3,magic3]
Prints one line per case with the seconds of each timed step (after one untimed warm-up step), then a JSON object.
Needs PyTorch (Debian 12: apt install python3-torch python3-scipy; 1.13) and SciPy. Not used by builds or tests.
"""
import builtins
import json
import sys
import time
import types

import torch
import torch.nn.functional as F

face_gd = sys.argv[1] if len(sys.argv) > 1 else 'Face-GD'
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 2
cases = sys.argv[4].split(',') if len(sys.argv) > 4 else ['freedom2', 'magic2', 'freedom3', 'magic3']
sys.path.insert(0, face_gd)
torch.set_num_threads(threads)

# Imports of the research module that the timed functions do not use.
for name in ['torchvision', 'torchvision.utils', 'tqdm']:
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules['tqdm'].tqdm = lambda it, *a, **k: it


class ToyEnergy:
    seed = 1

    def __init__(self, *args, **kwargs):
        g = torch.Generator().manual_seed(self.seed)
        self.target = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1

    def cuda(self):
        return self

    def get_residual(self, x, prompt=None):
        return F.avg_pool2d(x, 4) - self.target


encoders = {'functions.clip.base_clip': 'CLIPEncoder', 'functions.face_parsing.model': 'FaceParseTool',
            'functions.anime2sketch.model': 'FaceSketchTool', 'functions.landmark.model': 'FaceLandMarkTool',
            'functions.arcface.model': 'IDLoss'}
for i, (module, cls) in enumerate(encoders.items()):
    m = types.ModuleType(module)
    setattr(m, cls, type(cls, (ToyEnergy,), {'seed': i + 1}))
    sys.modules[module] = m

_to = torch.Tensor.to


def _to_cpu(self, *args, **kwargs):
    args = tuple('cpu' if a == 'cuda' else a for a in args)
    if kwargs.get('device') == 'cuda':
        kwargs['device'] = 'cpu'
    return _to(self, *args, **kwargs)


torch.Tensor.to = _to_cpu

# The research functions print energies after every step; keep the output to the timings.
_print = builtins.print
builtins.print = lambda *a, **k: None if a and isinstance(a[0], str) and a[0].startswith('[') else _print(*a, **k)

from functions import denoising as d  # noqa: E402
from models.diffusion import Model  # noqa: E402

config = dict(type='simple', in_channels=3, out_ch=3, ch=128, ch_mult=[1, 1, 2, 2, 4, 4], num_res_blocks=2,
              attn_resolutions=[16], dropout=0.0, var_type='fixedsmall', ema_rate=0.999, ema=True,
              resamp_with_conv=True, image_size=256, num_diffusion_timesteps=1000)
torch.manual_seed(0)
model = Model(config)
_print('params', sum(p.numel() for p in model.parameters()), 'torch', torch.__version__, 'threads', torch.get_num_threads())
betas = torch.linspace(0.0001, 0.02, 1000)
two, three = [1.0, 1.0], [1.0, 1.0, 1.0]
functions = {
    'freedom2': lambda x, seq: d.arcface_land_ddim_diffusion(x, seq, model, betas, rho_scale=two, stop=-1),
    'freedom2_frozen': lambda x, seq: d.arcface_land_ddim_diffusion(x, seq, model, betas, rho_scale=two, stop=-1),
    'magic2': lambda x, seq: d.arcface_land_ddim_diffusion_magic(x, seq, model, betas, rho_scale=two, stop=-1),
    'freedom3': lambda x, seq: d.clip_parse_id_ddim_diffusion(x, seq, model, betas, rho_scale=three, prompt='p', stop=-1),
    'magic3': lambda x, seq: d.clip_parse_id_ddim_diffusion_magic(x, seq, model, betas, rho_scale=three, prompt='p', stop=-1),
}
results = {}
x = torch.randn(1, 3, 256, 256)
for name in cases:
    model.requires_grad_(not name.endswith('_frozen'))
    functions[name](x, [500])  # one untimed warm-up step; stop=-1 guides every step
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        functions[name](x, [600 - 20 * s])  # one step per call
        times.append(time.perf_counter() - t0)
    results[name] = times
    _print(name, ' '.join(f'{t:.2f}' for t in times), flush=True)
_print(json.dumps(results))
