"""Built-in dataset plugin of coopnets: the embedded digits default and MNIST."""
