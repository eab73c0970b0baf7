"""The zoo: plug-ins wrapping the softmax-family losses of other libraries (keras 3 on each backend, optax,
scikit-learn), graded with `python -m suite run --plugin zoo` (docs/zoo.md). Not part of the core: nothing in
suite/ imports these modules, and each is loaded only where its library is installed."""
