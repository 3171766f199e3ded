# Prints a little about the machine the job ran on.
echo "bash ${BASH_VERSION%%(*} on $(uname -s), in $(basename "$PWD")"
