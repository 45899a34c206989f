"""Oracle tests: our implementations checked against independent references (torchvision,
scikit-learn, scipy, closed forms computed by hand), so that a mutation the behavioural tests
let through (a wrong rescaling, an off-by-one in a schedule, swapped normalisations) fails here."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, recall_score, top_k_accuracy_score
from torchvision.ops import stochastic_depth
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from effnet.models.layers import DropPath
from effnet.models.preprocessing import Preprocessing
from effnet.tasks.classification import ClassificationMetrics, evaluate, summarize
from effnet.training.config import TrainConfig
from effnet.training.distill import TeacherInput, distillation_loss
from effnet.training.recipe import lr_lambda

# ---------------------------------------------------------------- DropPath vs torchvision


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(64, 3, 4, 4), (50, 7), (33, 2, 5)])
def test_drop_path_equals_torchvision_stochastic_depth_row_mode(p, shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    layer = DropPath(p).train()
    torch.manual_seed(123)
    ours = layer(x)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    torch.manual_seed(123)
    ref = stochastic_depth(x, p, mode="row", training=True)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert torch.equal(ours, ref)
    assert torch.equal(g_ours, g_ref)
    # and the same number of random draws: the generator is left in the same state
    torch.manual_seed(123)
    layer(x)
    after_ours = torch.rand(4)
    torch.manual_seed(123)
    stochastic_depth(x, p, mode="row", training=True)
    assert torch.equal(after_ours, torch.rand(4))


def test_drop_path_statistics():
    """Whole rows dropped with probability p, survivors scaled by exactly 1/(1-p), mean kept."""
    p, n, d = 0.3, 20_000, 8
    x = torch.rand(n, d, dtype=torch.float64) + 0.5  # no zero entries: a zero row means dropped
    y = DropPath(p).train()(x)
    dropped = (y == 0).all(1)
    kept = ~dropped
    assert ((y == 0).any(1) == dropped).all()  # a row is dropped entirely or not at all
    assert dropped.double().mean().item() == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n))
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-12, atol=0)
    assert y.mean().item() == pytest.approx(x.mean().item(), rel=0.02)


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_drop_path_is_identity_in_eval_and_at_zero(p):
    x = torch.randn(16, 3, 2, 2)
    layer = DropPath(p).eval()
    state = torch.get_rng_state()
    assert torch.equal(layer(x), x)
    assert torch.equal(torch.get_rng_state(), state)  # no random numbers drawn
    if p == 0.0:
        assert torch.equal(layer.train()(x), x)
        assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------- classification metrics vs sklearn


def _sk_scores(logits: np.ndarray) -> np.ndarray:
    return logits[:, 1] if logits.shape[1] == 2 else logits  # sklearn's binary case takes one column


@pytest.mark.parametrize("num_classes", [2, 3, 4, 5, 7, 12])
def test_metrics_match_sklearn(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    batches = [
        (torch.randn(n, num_classes, generator=g) * 2, torch.randint(0, num_classes, (n,), generator=g))
        for n in (17, 1, 40, 9)
    ]
    metrics = ClassificationMetrics(num_classes)
    for logits, labels in batches:
        metrics.update(logits, labels)
    got = metrics.summary()
    logits = torch.cat([b[0] for b in batches]).numpy().astype(np.float64)
    labels = torch.cat([b[1] for b in batches]).numpy()
    classes = list(range(num_classes))
    cm = confusion_matrix(labels, logits.argmax(1), labels=classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that k >= n_classes is a perfect score
        top5 = top_k_accuracy_score(labels, _sk_scores(logits), k=5, labels=classes)
    assert got["confusion"] == cm.tolist()
    assert got["n"] == len(labels) == cm.sum()
    assert got["top5"] == pytest.approx(top5, abs=1e-12)
    assert got["top1"] == pytest.approx(accuracy_score(labels, logits.argmax(1)), abs=1e-12)
    assert got["score"] == got["top1"]
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    assert got["loss"] == pytest.approx(log_loss(labels, probs, labels=classes), rel=1e-5)
    # per-class accuracy = recall = the confusion matrix's diagonal over its row sums
    expected = recall_score(labels, logits.argmax(1), labels=classes, average=None, zero_division=0)
    np.testing.assert_allclose(got["per_class"], expected, rtol=1e-6)
    rows = cm.sum(1)
    np.testing.assert_allclose(got["per_class"], np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), 0.0))
    if num_classes <= 5:
        assert got["top5"] == 1.0
    else:
        assert got["top5"] < 1.0  # the test would not tell top-5 from "always right" otherwise


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top5_is_not_top_k_for_other_k(k):
    """With 10 classes sklearn's top-k for k != 5 differs from our top-5 on these logits: the
    comparison above can tell a wrong k."""
    g = torch.Generator().manual_seed(7)
    logits, labels = torch.randn(300, 10, generator=g), torch.randint(0, 10, (300,), generator=g)
    metrics = ClassificationMetrics(10)
    metrics.update(logits, labels)
    sk = top_k_accuracy_score(labels.numpy(), logits.numpy(), k=k, labels=list(range(10)))
    assert (metrics.summary()["top5"] == pytest.approx(sk)) == (k == 5)


def test_evaluate_over_a_loader_matches_sklearn():
    """evaluate() (the model is the identity, the 'images' are the logits) against sklearn."""
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(70, 6, generator=g), torch.randint(0, 6, (70,), generator=g)
    labels[labels == 4] = 5  # a class without samples: its per-class accuracy is 0, not NaN
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(logits, labels), batch_size=16)
    got = evaluate(torch.nn.Identity(), loader, 6)
    cm = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), labels=range(6))
    assert got["confusion"] == cm.tolist()
    assert got["top5"] == pytest.approx(top_k_accuracy_score(labels.numpy(), logits.numpy(), k=5, labels=range(6)))
    assert got["per_class"][4] == 0.0
    np.testing.assert_allclose(
        got["per_class"], recall_score(labels.numpy(), logits.argmax(1).numpy(), labels=range(6), average=None,
                                       zero_division=0), rtol=1e-6,
    )  # fmt: skip


def test_summarize_from_a_known_confusion_matrix():
    cm = torch.tensor([[5, 1, 0], [2, 2, 0], [0, 0, 0]])
    got = summarize(cm, top5_hits=10, loss_sum=5.0, n=10)
    assert got["top1"] == pytest.approx(0.7)
    assert got["top5"] == pytest.approx(1.0)
    assert got["loss"] == pytest.approx(0.5)
    assert got["per_class"] == pytest.approx([5 / 6, 0.5, 0.0])


# ---------------------------------------------------------------- LR schedules vs closed forms


def _config(**kw) -> TrainConfig:
    return TrainConfig(model="efficientnet_b0", opt="sgd", lr=0.1, **kw)


def _closed_form(step, *, sched, warmup, total, decay_steps, rate):
    if step < warmup:
        return (step + 1) / warmup
    if sched == "step":
        return rate ** math.floor((step - warmup) / decay_steps)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize(
    "epochs, spe, warmup_epochs, decay_epochs, rate",
    [(20, 10, 2.0, 2.4, 0.97), (30, 7, 1.5, 2.4, 0.97), (10, 13, 0.0, 1.0, 0.5), (12, 5, 1.0, 0.1, 0.9)],
)
@pytest.mark.parametrize("sched", ["step", "cosine"])
def test_lr_schedule_closed_form(sched, epochs, spe, warmup_epochs, decay_epochs, rate):
    cfg = _config(sched=sched, warmup_epochs=warmup_epochs, decay_epochs=decay_epochs, decay_rate=rate,
                  epochs=epochs).resolved(spe, 64)  # fmt: skip
    assert (cfg.sched, cfg.warmup_epochs, cfg.decay_epochs) == (sched, warmup_epochs, decay_epochs)
    total = epochs * spe
    warmup = int(warmup_epochs * spe)
    assert warmup <= total // 5  # not capped in these cases
    decay_steps = max(1, int(decay_epochs * spe))
    factor = lr_lambda(cfg, spe)
    for step in range(total):
        expected = _closed_form(step, sched=sched, warmup=warmup, total=total, decay_steps=decay_steps, rate=rate)
        assert factor(step) == pytest.approx(expected, rel=1e-12, abs=1e-15), step
    if warmup:
        assert factor(warmup - 1) == pytest.approx(1.0)
        assert factor(0) == pytest.approx(1 / warmup)
    assert factor(warmup) == pytest.approx(1.0)  # the schedule starts at the full lr


def test_step_schedule_is_tf_staircase():
    """0.97 every 2.4 epochs, in whole steps: 24 steps at 10 per epoch."""
    factor = lr_lambda(_config(sched="step", warmup_epochs=0.0, decay_epochs=2.4, epochs=10), 10)
    assert [factor(t) for t in (0, 23)] == [1.0, 1.0]
    assert factor(24) == pytest.approx(0.97) and factor(47) == pytest.approx(0.97)
    assert factor(48) == pytest.approx(0.97**2)
    assert factor(99) == pytest.approx(0.97**4)


def test_cosine_schedule_points():
    factor = lr_lambda(_config(sched="cosine", warmup_epochs=1.0, epochs=11), 10)  # warm-up 10, then 100
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5)
    assert factor(35) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert factor(109) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert factor(110) == pytest.approx(0.0, abs=1e-15)
    assert factor(500) == pytest.approx(0.0, abs=1e-15)  # never past the end of the cosine


@pytest.mark.parametrize("sched", ["step", "cosine"])
def test_warmup_is_capped_at_a_fifth_of_the_run(sched):
    # 5 warm-up epochs of a 10-epoch run at 10 steps each: capped at 100 // 5 = 20 steps
    factor = lr_lambda(_config(sched=sched, warmup_epochs=5.0, decay_epochs=2.4, epochs=10), 10)
    assert [factor(t) for t in range(20)] == pytest.approx([(t + 1) / 20 for t in range(20)])
    assert factor(20) == pytest.approx(1.0)
    if sched == "cosine":
        assert factor(60) == pytest.approx(0.5)  # halfway through the 80 steps after the warm-up
    else:
        assert factor(20 + 24) == pytest.approx(0.97)


def test_schedule_drives_lambdalr_as_the_trainer_uses_it():
    cfg = _config(sched="cosine", warmup_epochs=1.0, epochs=5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, 4))
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 * _closed_form(t, sched="cosine", warmup=4, total=20, decay_steps=1, rate=1) for t in range(20)]
    assert lrs == pytest.approx(expected)


# ---------------------------------------------------------------- distillation


class _Echo(torch.nn.Module):
    """A teacher that returns what it is given, so the test sees the teacher's input."""

    def __init__(self, preprocessing: Preprocessing):
        super().__init__()
        self.preprocessing = preprocessing

    def forward(self, x):
        return x.clone()


STUDENT = Preprocessing(resolution=16, resize=24, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
TEACHER = Preprocessing(resolution=16, resize=24, mean=(0.5, 0.3, 0.1), std=(0.5, 0.2, 0.4))


def _normalise(raw, pre):
    return (raw - torch.tensor(pre.mean).view(1, -1, 1, 1)) / torch.tensor(pre.std).view(1, -1, 1, 1)


def test_teacher_sees_the_image_in_its_own_normalisation():
    raw = torch.rand(3, 3, 16, 16)  # images in [0, 1], as ToDtype(scale=True) gives them
    got = TeacherInput(_Echo(TEACHER), STUDENT)(_normalise(raw, STUDENT))
    torch.testing.assert_close(got, _normalise(raw, TEACHER), rtol=1e-5, atol=1e-5)
    # the formula of the brief, by hand
    x = _normalise(raw, STUDENT)
    s_mean, s_std = torch.tensor(STUDENT.mean).view(1, 3, 1, 1), torch.tensor(STUDENT.std).view(1, 3, 1, 1)
    t_mean, t_std = torch.tensor(TEACHER.mean).view(1, 3, 1, 1), torch.tensor(TEACHER.std).view(1, 3, 1, 1)
    torch.testing.assert_close(got, ((x * s_std + s_mean) - t_mean) / t_std)


def test_teacher_input_with_a_real_teacher():
    import effnet
    from tests.conftest import give_bn_real_statistics

    teacher = effnet.create_model(phi=-3, num_classes=5, resolution=16)
    give_bn_real_statistics(teacher, 16, damp_residuals=True)
    teacher.preprocessing = TEACHER
    raw = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = teacher(_normalise(raw, TEACHER))
    got = TeacherInput(teacher, STUDENT)(_normalise(raw, STUDENT))
    assert expected.abs().max() > 1e-3  # logits that would show a wrong input
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_teacher_with_the_students_preprocessing_gets_the_batch_unchanged():
    x = torch.randn(2, 3, 16, 16)
    same = Preprocessing(resolution=16, resize=24, mean=STUDENT.mean, std=STUDENT.std)
    assert torch.equal(TeacherInput(_Echo(same), STUDENT)(x), x)


@pytest.mark.parametrize("side", [24, 10])  # up and down: antialiasing only matters going down
def test_teacher_at_another_resolution_gets_a_resized_batch(side):
    raw = torch.rand(2, 3, 16, 16)
    other = Preprocessing(resolution=side, resize=side + 8, mean=TEACHER.mean, std=TEACHER.std)
    got = TeacherInput(_Echo(other), STUDENT)(_normalise(raw, STUDENT))
    assert got.shape == (2, 3, side, side)
    resized = TF.resize(raw, [side, side], interpolation=InterpolationMode.BILINEAR, antialias=True)
    # resizing is linear with weights summing to one, so it commutes with the per-channel affine
    torch.testing.assert_close(got, _normalise(resized, TEACHER), rtol=1e-4, atol=1e-4)
    # and with equal normalisation only the resize is applied
    same_norm = Preprocessing(resolution=side, resize=side + 8, mean=STUDENT.mean, std=STUDENT.std)
    x = _normalise(raw, STUDENT)
    got = TeacherInput(_Echo(same_norm), STUDENT)(x)
    expected = TF.resize(x, [side, side], interpolation=InterpolationMode.BILINEAR, antialias=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (4.0, 0.9), (2.5, 1.0), (0.5, 0.3)])
def test_distillation_loss_against_scipy(temperature, alpha):
    g = torch.Generator().manual_seed(int(temperature * 10))
    student, teacher = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3
    labels = torch.randint(0, 5, (6,), generator=g)
    hard = F.cross_entropy(student, labels)
    p_t = torch.softmax(teacher.double() / temperature, 1).numpy()
    p_s = torch.softmax(student.double() / temperature, 1).numpy()
    kl = entropy(p_t, p_s, axis=1).mean()  # KL(teacher || student) per sample, averaged over the batch
    expected = alpha * temperature**2 * kl + (1 - alpha) * hard.item()
    got = distillation_loss(student, teacher, hard, temperature, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # a half-precision teacher (cached logits) is read as float
    got_half = distillation_loss(student, teacher.bfloat16(), hard, temperature, alpha)
    assert got_half.dtype == torch.float32


def test_distillation_loss_with_alpha_zero_is_the_hard_loss_exactly():
    student, teacher = torch.randn(8, 10), torch.randn(8, 10) * 5
    hard = F.cross_entropy(student, torch.randint(0, 10, (8,)))
    assert torch.equal(distillation_loss(student, teacher, hard, 4.0, 0.0), hard)


def test_distillation_gradient_keeps_its_size_across_temperatures():
    """The T^2 factor: for large T the soft term's gradient tends to (z_s - z_t) / (N * K) whatever T."""
    student = torch.randn(4, 6, dtype=torch.float64) * 0.1
    teacher = torch.randn(4, 6, dtype=torch.float64) * 0.1
    grads = []
    for t in (20.0, 80.0):
        s = student.clone().requires_grad_(True)
        distillation_loss(s, teacher, torch.zeros((), dtype=torch.float64), t, 1.0).backward()
        grads.append(s.grad)
    z_s, z_t = student - student.mean(1, keepdim=True), teacher - teacher.mean(1, keepdim=True)
    limit = (z_s - z_t) / (4 * 6)
    for grad in grads:
        torch.testing.assert_close(grad, limit, rtol=2e-2, atol=1e-5)
