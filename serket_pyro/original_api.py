"""The original Serket's constructor signatures, translated to serket_pyro's.

A script written for the original Serket (naka-lab/Serket, 2018-2023) calls the modules with
their positional orders and keywords, which differ from ours and changed between versions:

* ``gmm.GMM(K, itr=100, name="gmm", category=None, load_dir=None | mode="learn")``;
* ``mlda.MLDA(K, weights=None, itr=100, name="mlda", category=None, load_dir=None | mode="learn")``;
* ``mm.MarkovModel(num_samp=100, name="mm", load_dir=None | mode="learn")``;
* ``vae.VAE(latent_dim, weight_stddev=0.1, itr=5000, name="vae", hidden_encoder_dim=100,
  hidden_decoder_dim=100, batch_size=None, KL_param=1)`` (2018),
  ``vae.VAE(latent_dim, itr=5000, name="vae", batch_size=None, KL_param=1, RE="BCE",
  load_dir=None | mode="learn")`` (2019-2021) and
  ``vae.VAE(latent_dim, epoch=5000, name="vae", batch_size=None, KLD_weight=1, RE="BCE",
  load_dir=None, loss_step=50)`` (2021-2023).

Each module class names its table (:class:`OriginalSignature`) in the class attribute
``_original_api``; :class:`~serket_pyro.module.Module` then wraps the class's ``__init__`` with
:func:`translate` (``Module.__init_subclass__``), so that every module takes both its own
signature and the original's.  A positional call is read in the original's order when the
original's ``name`` position holds a string (ours never takes a string there: a positional name
can never become labels); keywords of the original are renamed or converted; an original
argument that has no counterpart raises ``ValueError`` naming it and what to write instead, or,
where it is used only by another method (``MarkovModel(num_samp=)``), warns with
:class:`OriginalArgumentWarning`.  Nothing is accepted and ignored silently (the 2018 VAE's
``weight_stddev`` is ``init_scale``, the truncated-normal start of the built-in networks).

``load_dir`` (a folder ``module001_gmm/004`` holding the model file of one iteration, see
:meth:`~serket_pyro.module.Module.load_model`) is not a constructor parameter of ours: the
wrapper takes it out, builds the module in ``mode="recog"`` and loads the model at once.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass, field

__all__ = ["OriginalArgumentWarning", "OriginalSignature", "translate", "wrap_init", "GMM_API", "MLDA_API",
           "MM_API", "VAE_API"]

#: the original's positional slot that held ``load_dir`` in some versions and ``mode`` in others
LOAD_DIR_OR_MODE = "load_dir|mode"


class OriginalArgumentWarning(UserWarning):
    """An argument of the original Serket that serket_pyro takes but does not use (the message
    says why and what to write instead)."""


@dataclass(frozen=True)
class OriginalSignature:
    """How one module class reads the original's arguments.

    Parameters
    ----------
    orders : tuple of tuple of str
        The original's positional orders (first match wins).  An order applies when the position
        of ``"name"`` holds a string; names are the original's keywords (translated afterwards),
        :data:`LOAD_DIR_OR_MODE` for the slot that was ``load_dir`` or ``mode``.
    renames : dict of str to str
        Original keyword -> ours, same meaning and values (``epoch`` -> ``itr``).
    converters : dict of str to callable
        Original keyword -> ``f(value, given, cls) -> dict`` of our keywords (``given``: every
        original-style keyword of the call), raising ``ValueError`` for values without a
        counterpart.
    detect : callable, optional
        ``f(args) -> order or None``: an order recognised without a positional name (the 2018
        VAE's float ``weight_stddev`` in second place).
    """

    orders: tuple = ()
    renames: dict = field(default_factory=dict)
    converters: dict = field(default_factory=dict)
    detect: object = None


def _owner(cls) -> str:
    return f"{cls.__name__}()"


def _bind_original(cls, order, args, kwargs) -> dict:
    if len(args) > len(order):
        raise ValueError(f"{_owner(cls)}: the original's signature ({', '.join(order)}) takes {len(order)} "
                         f"positional arguments, got {len(args)}")
    out = {}
    for slot, value in zip(order, args):
        if slot == LOAD_DIR_OR_MODE:
            slot = "mode" if isinstance(value, str) and value in ("learn", "recog") else "load_dir"
        if slot in kwargs:
            raise ValueError(f"{_owner(cls)}: {slot} given twice (by position in the original's order and by keyword)")
        out[slot] = value
    return out


def translate(cls, api: OriginalSignature, params, args: tuple, kwargs: dict):
    """Translate one constructor call.

    Parameters
    ----------
    cls : type
        The module class (for the messages).
    api : OriginalSignature
        Its table.
    params : collection of str
        Our ``__init__`` parameters.
    args, kwargs
        The call's arguments (without ``self``).

    Returns
    -------
    args : tuple
        Positional arguments in our order (unchanged unless an original order was recognised).
    kwargs : dict
        Keyword arguments in our names.
    load_dir : str or None
        The original's ``load_dir`` (to load after construction).
    """
    kwargs = dict(kwargs)
    order = None
    for o in api.orders:
        i = o.index("name")
        if len(args) > i and isinstance(args[i], str):
            order = o
            break
    if order is None and api.detect is not None:
        order = api.detect(args)
    if order is not None:
        kwargs = {**_bind_original(cls, order, args, kwargs), **kwargs}
        args = ()
    load_dir = kwargs.pop("load_dir", None)
    if load_dir is not None:
        if kwargs.get("mode", "recog") != "recog":
            raise ValueError(f"{_owner(cls)}: load_dir={load_dir!r} loads a trained model for recognition, "
                             f"but mode={kwargs['mode']!r}: leave mode out (or write mode='recog')")
        kwargs["mode"] = "recog"
    given = {k: v for k, v in kwargs.items() if k in api.renames or k in api.converters}
    out = {k: v for k, v in kwargs.items() if k not in given}
    from_user, translated = set(out), {}
    for k, v in given.items():
        if k in api.renames:
            new = {api.renames[k]: v}
        else:
            new = api.converters[k](v, given, cls)
        for ours, value in new.items():
            if ours in from_user:
                raise ValueError(f"{_owner(cls)}: {k}= (the original's name) and {ours}= both given: "
                                 f"write only {ours}=")
            if ours in translated and translated[ours][1] != value:
                raise ValueError(f"{_owner(cls)}: {translated[ours][0]}= and {k}= both set {ours} "
                                 f"({translated[ours][1]!r} and {value!r}): write only {ours}=")
            translated[ours] = (k, value)
            out[ours] = value
    unknown = [k for k in out if k not in params]
    if unknown:
        raise ValueError(f"{_owner(cls)}: unknown argument(s) {', '.join(unknown)}: not a parameter of serket_pyro's "
                         f"{cls.__name__} ({', '.join(sorted(params))}) nor one of the original Serket's "
                         f"({', '.join(sorted(set(api.renames) | set(api.converters) | {'load_dir', 'name'}))})")
    return args, out, load_dir


def wrap_init(cls, api: OriginalSignature):
    """Wrap ``cls.__init__`` with :func:`translate` (called by ``Module.__init_subclass__``).

    ``inspect.signature`` still reports the wrapped signature (``functools.wraps``), so
    ``get_config`` reads our parameters only."""
    import inspect

    init = cls.__dict__["__init__"]
    params = frozenset(list(inspect.signature(init).parameters)[1:])

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        args, kwargs, load_dir = translate(type(self), api, params, args, kwargs)
        init(self, *args, **kwargs)
        if load_dir is not None:
            self.load_model(load_dir)

    cls.__init__ = __init__


# ----------------------------------------------------------------------------- the tables
def _vae_re(value, given, cls):
    table = {"BCE": "bernoulli", "MSE": "gaussian"}
    if value not in table:
        raise ValueError(f"{_owner(cls)}: RE must be 'BCE' or 'MSE' (the original's choices), got {value!r}; "
                         "serket_pyro's name is likelihood='bernoulli' or 'gaussian'")
    return {"likelihood": table[value]}


def _vae_hidden(value, given, cls):
    enc, dec = given.get("hidden_encoder_dim"), given.get("hidden_decoder_dim")
    if enc is not None and dec is not None and enc != dec:
        raise ValueError(f"{_owner(cls)}: hidden_encoder_dim={enc!r} and hidden_decoder_dim={dec!r} differ; "
                         f"serket_pyro's built-in networks have one hidden width: write hidden={enc!r}, or give "
                         "your own networks (encoder=..., decoder=..., or override build_encoder/build_decoder)")
    return {"hidden": value}


def _vae_weight_stddev(value, given, cls):
    return {"init_scale": value}


def _vae_detect(args):
    """``VAE(18, 0.1, 200)``: the 2018 order without a name (a fraction where our ``itr`` is)."""
    if len(args) >= 2 and isinstance(args[1], numbers.Real) and not isinstance(args[1], bool) \
            and not float(args[1]).is_integer():
        return _VAE_2018
    return None


_VAE_2018 = ("latent_dim", "weight_stddev", "itr", "name", "hidden_encoder_dim", "hidden_decoder_dim",
             "batch_size", "KL_param", "mode")
_VAE_2019 = ("latent_dim", "itr", "name", "batch_size", "kl_weight", "RE", LOAD_DIR_OR_MODE, "loss_step")

GMM_API = OriginalSignature(orders=(("K", "itr", "name", "category", LOAD_DIR_OR_MODE),))
MLDA_API = OriginalSignature(orders=(("K", "weights", "itr", "name", "category", LOAD_DIR_OR_MODE),))
MM_API = OriginalSignature(orders=(("num_samp", "name", LOAD_DIR_OR_MODE),))
VAE_API = OriginalSignature(
    orders=(_VAE_2019, _VAE_2018),
    renames={"epoch": "itr", "KL_param": "kl_weight", "KLD_weight": "kl_weight"},
    converters={"RE": _vae_re, "hidden_encoder_dim": _vae_hidden, "hidden_decoder_dim": _vae_hidden,
                "weight_stddev": _vae_weight_stddev},
    detect=_vae_detect)
