"""The one error type axnet raises for bad input: the CLI prints it as a single line and exits 2."""


class AxnetError(Exception):
    """Bad input. The message names the file and line, or the option, and says what is wrong."""

    def __init__(self, message, *, path=None, line=None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(self.__str__())

    def __str__(self):
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        return where + self.message
