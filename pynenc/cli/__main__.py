from pynenc.cli.main import main

main()
