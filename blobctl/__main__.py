from blobctl.cli import main

main()
