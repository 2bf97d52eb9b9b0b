"""MAP ("poor Bayes") is L2-regularised least squares.

With a Gaussian prior w ~ N(0, α⁻¹ I) and noise y_i ~ N(x_iᵀw, σ²),

    θ_MP = argmax_w log p(y | X, w) + log p(w)
         = argmin_w ‖y - Xw‖² / (2σ²) + α‖w‖² / 2
         = argmin_w ‖y - Xw‖² + λ‖w‖²,   λ = σ² α,

which is ridge regression. The full posterior adds what MAP throws away: the
uncertainty of w, and the evidence p(y | X), which picks α without a validation set.

Run:  python examples/map_is_ridge.py
"""

import torch

from varbayes.conjugate import BayesianLinearRegression

gen = torch.Generator().manual_seed(0)
n, d, noise_std = 60, 8, 0.5
X = torch.randn(n, d, generator=gen, dtype=torch.float64)
w_true = torch.randn(d, generator=gen, dtype=torch.float64)
y = X @ w_true + noise_std * torch.randn(n, generator=gen, dtype=torch.float64)

alpha = 3.0
post = BayesianLinearRegression(prior_precision=alpha, noise_variance=noise_std**2).update(X, y)
lam = float(post.ridge_penalty)
ridge = torch.linalg.solve(X.T @ X + lam * torch.eye(d, dtype=torch.float64), X.T @ y)
print(f"lambda = sigma^2 * alpha = {lam:.4f}")
print("max |MAP - ridge| =", float((post.map() - ridge).abs().max()))
print("posterior sd of w:", [round(v, 3) for v in post.posterior.stddev.tolist()])

# The evidence as a function of the prior precision alpha: its maximum chooses alpha.
for a in (0.01, 0.1, 1.0, 10.0, 100.0):
    model = BayesianLinearRegression(prior_precision=a, noise_variance=noise_std**2)
    print(f"alpha = {a:>6}: log p(y | X) = {float(model.log_marginal_likelihood(X, y)):9.3f}")
best = BayesianLinearRegression.fit_evidence(X, y)
a_star, s2_star = float(best.prior_precision), float(best.noise_variance)
print(f"evidence maximum: alpha = {a_star:.4f}, sigma^2 = {s2_star:.4f}")
