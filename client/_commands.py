"""Commands a person sends to a running training: the push channel and the inbox it fills."""


class CommandRefused(Exception):
    """Raised by an `on_command` handler to refuse its command, with the reason said.

    Example:
        ```python
        def set_lr(command):
            if command.value > 1.0:
                raise CommandRefused("a learning rate above 1.0 diverges here")
            optimizer.learning_rate = command.value

        run.on_command("set_learning_rate", set_lr)
        ```
    """
