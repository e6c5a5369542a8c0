"""Config groups only the studies use (mechanism_setting, mechanism_variant), found through `hydra.searchpath`
(pkg://ppp.conf.study, in ppp/conf/config.yaml) under their own group names, so that sweep folder names and
`choices` stay `mechanism_variant=...` as before."""
