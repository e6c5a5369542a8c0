from ppp.report import main

main()
