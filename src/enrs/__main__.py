from enrs.cli import main

main()
