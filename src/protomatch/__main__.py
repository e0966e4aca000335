from protomatch.cli import main

main()
