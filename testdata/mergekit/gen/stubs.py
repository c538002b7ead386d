"""Stand-ins for the parts of mergekit's package that its merge-method modules import
(pydantic, the task graph, architectures), so that those modules run with only torch.
mergekit itself is not part of wtool: set MERGEKIT to a checkout of arcee-ai/mergekit."""
import os, sys, types, importlib.util, typing
import typing_extensions
if not hasattr(typing_extensions, 'Callable'): typing_extensions.Callable = typing.Callable

MK = os.environ.get("MERGEKIT") or sys.exit("set MERGEKIT to a checkout of arcee-ai/mergekit")

def _mod(name):
    m = types.ModuleType(name)
    sys.modules[name] = m
    return m

# --- pydantic: a plain kwargs-to-attributes base class
pyd = _mod("pydantic")
class BaseModel:
    def __init_subclass__(cls, **kw):
        super().__init_subclass__()
    def __init__(self, **kw):
        for k, v in kw.items():
            object.__setattr__(self, k, v)
    @classmethod
    def __class_getitem__(cls, item):
        return cls
def model_validator(*a, **k):
    return lambda f: f
def Field(*a, **k):
    return None
def create_model(name, __base__=None, **fields):
    ns = {k: v for k, v in fields.items() if callable(v) and not isinstance(v, tuple)}
    return type(name, (__base__,), ns)
pyd.BaseModel, pyd.model_validator, pyd.Field, pyd.create_model = BaseModel, model_validator, Field, create_model

# --- mergekit package skeleton
mk = _mod("mergekit"); mk.__path__ = []
arch = _mod("mergekit.architecture")
class WeightInfo:
    def __init__(self, name="w", is_embed=False, optional=False):
        self.name, self.is_embed, self.optional = name, is_embed, optional
arch.WeightInfo = WeightInfo
common = _mod("mergekit.common")
class ImmutableMap:
    def __class_getitem__(cls, item): return cls
    def __init__(self, data): self.data = dict(data)
    def __iter__(self): return iter(self.data)
    def __getitem__(self, k): return self.data[k]
    def __len__(self): return len(self.data)
    def __contains__(self, k): return k in self.data
    def keys(self): return self.data.keys()
    def items(self): return self.data.items()
    def values(self): return self.data.values()
    def get(self, k, d=None): return self.data.get(k, d)
class ModelReference(str):
    pass
common.ImmutableMap, common.ModelReference = ImmutableMap, ModelReference
graph = _mod("mergekit.graph")
T = typing.TypeVar("T")
class Task(BaseModel, typing.Generic[T]):
    pass
graph.Task = Task
io = _mod("mergekit.io"); io.__path__ = []
tasks = _mod("mergekit.io.tasks"); tasks.GatherTensors = type("GatherTensors", (), {})
tok = _mod("mergekit.tokenizer"); tok.PermutedEmbeddings = type("PermutedEmbeddings", (), {})
mm = _mod("mergekit.merge_methods"); mm.__path__ = []

def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m

sparsify = _load("mergekit.sparsify", f"{MK}/mergekit/sparsify.py")
for n in ["base", "rectify_embed", "linear", "slerp", "nuslerp", "passthrough", "model_stock",
          "arcee_fusion", "karcher", "generalized_task_arithmetic", "registry", "easy_define",
          "multislerp", "nearswap", "ram", "sce"]:
    _load(f"mergekit.merge_methods.{n}", f"{MK}/mergekit/merge_methods/{n}.py")
REGISTRY = sys.modules["mergekit.merge_methods.registry"].REGISTERED_MERGE_METHODS
