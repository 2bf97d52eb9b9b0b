"""The post's heights example: a Bayesian updates a prior belief about the mean height.

Run:  python examples/heights.py   (writes heights.png)
"""

from varbayes.conjugate import NormalKnownVariance
from varbayes.heights import heights_data, heights_example

# 20 heights around 183 cm; a prior belief that people are small: mu ~ N(160, 10^2)
x = heights_data(n=20, mean=183.0, std=7.0, seed=0)
result = heights_example(x, prior_mean=160.0, prior_std=10.0, noise_std=7.0, plot="heights.png")
print(result.table())

# The same with the model directly: update, posterior, predictive, evidence, MAP vs MLE.
prior = NormalKnownVariance(prior_mean=160.0, prior_std=10.0, noise_std=7.0)
post = prior.update(x)
print("posterior:", post.posterior)  # torch.distributions.Normal
print("predictive sd of a new height:", float(post.posterior_predictive().stddev))
print("log evidence:", float(prior.log_marginal_likelihood(x)))
print("MAP (poor Bayes):", float(post.map()), " MLE:", float(post.mle()))
