from pynenc.supervisors.cli import main

main()
