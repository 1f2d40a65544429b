"""Training data for idn_tf.

`sources` loads a dataset into in-memory numpy arrays (`Dataset` of two `Split`s);
`noise` turns a training split's clean labels into synthetic noisy labels (docs/method.md §5).
"""
